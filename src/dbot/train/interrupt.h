// Stopping a run without losing work: SIGINT and SIGTERM (what schedulers send before they preempt a job)
// ask the training loop to stop after the current step; it writes checkpoint-last.pt and returns, and the
// command exits naming the checkpoint. A second signal ends the process at once (its default action), for a
// user who will not wait. The handler only stores the signal number (async-signal-safe).
#pragma once

namespace dbot::train {

// Installs the handlers for its lifetime (the previous ones come back on destruction) and clears any
// earlier request. One at a time.
class StopOnSignal {
 public:
  StopOnSignal();
  ~StopOnSignal();
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;
};

// The signal that asked to stop (SIGINT, SIGTERM), or 0.
int stop_requested();

// For tests: as if `sig` had arrived (0 clears).
void request_stop(int sig);

// "SIGINT", "SIGTERM", else "signal N".
const char* signal_name(int sig);

}  // namespace dbot::train
