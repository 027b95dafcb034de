#include "dbot/train/interrupt.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <stdexcept>

namespace dbot::train {

namespace {

std::atomic<int> g_stop{0};
std::atomic<bool> g_installed{false};
struct sigaction g_old_int, g_old_term;

extern "C" void on_stop_signal(int sig) {
  if (g_stop.exchange(sig) != 0) {  // the second signal: the default action (terminate) now
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

}  // namespace

StopOnSignal::StopOnSignal() {
  if (g_installed.exchange(true)) throw std::logic_error("StopOnSignal: already installed");
  g_stop = 0;
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // the loader's reads and waits go on; the loop checks the flag between steps
  sigaction(SIGINT, &sa, &g_old_int);
  sigaction(SIGTERM, &sa, &g_old_term);
}

StopOnSignal::~StopOnSignal() {
  sigaction(SIGINT, &g_old_int, nullptr);
  sigaction(SIGTERM, &g_old_term, nullptr);
  g_installed = false;
}

int stop_requested() { return g_stop.load(std::memory_order_relaxed); }

void request_stop(int sig) { g_stop = sig; }

const char* signal_name(int sig) {
  static thread_local char buf[32];
  if (sig == SIGINT) return "SIGINT";
  if (sig == SIGTERM) return "SIGTERM";
  std::snprintf(buf, sizeof buf, "signal %d", sig);
  return buf;
}

}  // namespace dbot::train
