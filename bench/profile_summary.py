#!/usr/bin/env python3
"""Tabulates a LibTorch profiler trace (`dbot bench step --profile FILE`) per operator: self time (the time in
an operator minus the operators it called), calls and inclusive time, per step, as a markdown table.

  bench/profile_summary.py TRACE --steps N [--top 25]

Standard library only. Self time is computed per thread from the nesting of the events' [ts, ts + dur)
intervals; autograd's backward nodes (names ending in "Backward0" and the like) appear as operators whose
self time is the engine's own work around the kernels they call.
"""
import argparse
import json
import re
import sys
from collections import defaultdict


def load_events(path):
    text = open(path).read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # older writers leave a comma before the closing bracket
        data = json.loads(re.sub(r",\s*\]\s*$", "]", text.strip()))
    if isinstance(data, dict):
        data = data.get("traceEvents", [])
    return [e for e in data if isinstance(e, dict) and e.get("ph") == "X" and "dur" in e]


def summarize(events):
    """Returns {name: [self_us, inclusive_us, calls]} and the traced wall time in microseconds."""
    table = defaultdict(lambda: [0.0, 0.0, 0])
    by_thread = defaultdict(list)
    for e in events:
        by_thread[e.get("tid", 0)].append((float(e["ts"]), float(e["dur"]), e["name"]))
    wall = 0.0
    for evs in by_thread.values():
        evs.sort(key=lambda t: (t[0], -t[1]))  # parents before children starting at the same time
        wall = max(wall, max(ts + dur for ts, dur, _ in evs) - min(ts for ts, _, _ in evs))
        stack = []  # (end, name) of the open events
        for ts, dur, name in evs:
            while stack and stack[-1][0] <= ts:
                stack.pop()
            row = table[name]
            row[0] += dur
            row[1] += dur
            row[2] += 1
            if stack:
                table[stack[-1][1]][0] -= dur  # a child's time is not its parent's self time
            stack.append((ts + dur, name))
    return table, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, required=True, help="steps the trace covers (dbot bench step --steps)")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    events = load_events(a.trace)
    if not events:
        sys.exit(f"{a.trace}: no complete ('ph': 'X') events")
    table, wall = summarize(events)
    total_self = sum(r[0] for r in table.values())
    rows = sorted(table.items(), key=lambda kv: -kv[1][0])
    print(f"{a.trace}: {len(events)} events, {a.steps} steps, traced wall {wall / 1e3 / a.steps:.2f} ms/step, "
          f"operators' self time {total_self / 1e3 / a.steps:.2f} ms/step\n")
    print("| operator | self ms/step | share of self | calls/step | inclusive ms/step |")
    print("|---|---|---|---|---|")
    for name, (self_us, incl_us, calls) in rows[: a.top]:
        print(f"| {name} | {self_us / 1e3 / a.steps:.2f} | {100 * self_us / total_self:.1f}% | "
              f"{calls / a.steps:.0f} | {incl_us / 1e3 / a.steps:.2f} |")
    rest = rows[a.top:]
    if rest:
        r_self = sum(r[0] for _, r in rest)
        print(f"| ({len(rest)} others) | {r_self / 1e3 / a.steps:.2f} | {100 * r_self / total_self:.1f}% | | |")


if __name__ == "__main__":
    main()
