#include "dbot/dist/spawn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace dbot::dist {

namespace {

volatile std::sig_atomic_t g_signals = 0;      // signals received
volatile std::sig_atomic_t g_last_signal = 0;  // the last one

void on_signal(int sig) {
  g_last_signal = sig;
  g_signals = g_signals + 1;
}

// The child's environment: this one without the variables a launcher sets, plus the job's.
std::vector<std::string> child_environment(int rank, int nproc, int port) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const std::string name = kv.substr(0, kv.find('='));
    if (name == "RANK" || name == "WORLD_SIZE" || name == "LOCAL_RANK" || name == "LOCAL_WORLD_SIZE" ||
        name == "MASTER_ADDR" || name == "MASTER_PORT") {
      continue;
    }
    env.push_back(kv);
  }
  env.push_back("RANK=" + std::to_string(rank));
  env.push_back("WORLD_SIZE=" + std::to_string(nproc));
  env.push_back("LOCAL_RANK=" + std::to_string(rank));
  env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(nproc));
  env.push_back("MASTER_ADDR=127.0.0.1");
  env.push_back("MASTER_PORT=" + std::to_string(port));
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// The status a shell would report for a child's wait status.
int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("--nproc: cannot open a socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) throw std::runtime_error(std::string("--nproc: no free port on 127.0.0.1: ") + std::strerror(err));
  return ntohs(addr.sin_port);
}

int run_local_job(int nproc, const std::vector<std::string>& args, std::chrono::seconds grace) {
  if (nproc < 1) throw std::invalid_argument("--nproc must be at least 1");
  const int port = free_local_port();
  // Everything exec needs is built before fork (the child only calls async-signal-safe functions).
  std::vector<std::vector<std::string>> envs;
  for (int r = 0; r < nproc; ++r) envs.push_back(child_environment(r, nproc, port));
  std::vector<std::string> argv = {"dbot"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto c_argv = c_strings(argv);

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {
  }, old_term{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  const pid_t parent = getpid();
  std::vector<pid_t> pids(static_cast<size_t>(nproc), -1);
  std::vector<bool> running(static_cast<size_t>(nproc), false);
  int first_failure = 0;
  using Clock = std::chrono::steady_clock;
  Clock::time_point kill_at = Clock::time_point::max();
  auto signal_all = [&](int sig) {
    for (int r = 0; r < nproc; ++r) {
      if (running[static_cast<size_t>(r)]) ::kill(pids[static_cast<size_t>(r)], sig);
    }
  };
  for (int r = 0; r < nproc; ++r) {
    auto c_env = c_strings(envs[static_cast<size_t>(r)]);
    const pid_t pid = ::fork();
    if (pid < 0) {
      std::fprintf(stderr, "dbot: --nproc: fork failed: %s\n", std::strerror(errno));
      first_failure = 1;
      signal_all(SIGTERM);
      break;
    }
    if (pid == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);  // the parent died before prctl
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::execve("/proc/self/exe", c_argv.data(), c_env.data());
      ::_exit(127);
    }
    pids[static_cast<size_t>(r)] = pid;
    running[static_cast<size_t>(r)] = true;
  }

  int forwarded = 0, left = 0;
  for (const bool b : running) left += b ? 1 : 0;
  while (left > 0) {
    for (; forwarded < g_signals; ++forwarded) signal_all(g_last_signal);
    if (Clock::now() >= kill_at) {
      signal_all(SIGKILL);
      kill_at = Clock::time_point::max();
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    int rank = 0;
    while (rank < nproc && pids[static_cast<size_t>(rank)] != pid) ++rank;
    if (rank == nproc) continue;
    running[static_cast<size_t>(rank)] = false;
    --left;
    const int code = exit_code(status);
    if (code != 0 && first_failure == 0) {
      first_failure = code;
      // A stop by signal (130, 143) is every rank's own orderly exit; anything else stops the others.
      if (code != 128 + SIGINT && code != 128 + SIGTERM && left > 0) {
        std::fprintf(stderr, "dbot: --nproc: rank %d of %d exited with status %d; stopping the other %d\n", rank, nproc,
                     code, left);
        signal_all(SIGTERM);
        kill_at = Clock::now() + grace;
      }
    }
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return first_failure;
}

}  // namespace dbot::dist
