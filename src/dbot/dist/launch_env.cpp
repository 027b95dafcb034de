#include "dbot/dist/launch_env.h"

#include <cstdlib>
#include <stdexcept>

namespace dbot::dist {

namespace {

constexpr int kDefaultPort = 29500;  // torch.distributed's

struct Reader {
  const std::function<const char*(const char*)>& getenv;
  std::string launcher;

  bool has(const char* name) const {
    const char* v = getenv(name);
    return v != nullptr && *v != '\0';
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("distributed launch (" + launcher + "): " + what);
  }
  // A whole number in [lo, hi] from `name`; `fallback` when unset (below lo: required).
  int integer(const char* name, int lo, int hi, int fallback = -1) const {
    if (!has(name)) {
      if (fallback >= lo) return fallback;
      fail(std::string(name) + " is not set");
    }
    const std::string v = getenv(name);
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (end == v.c_str() || *end != '\0' || n < lo || n > hi) {
      fail(std::string(name) + "=" + v + ": expected a whole number in [" + std::to_string(lo) + ", " +
           std::to_string(hi) + "]");
    }
    return static_cast<int>(n);
  }
  std::string text(const char* name, const std::string& fallback = "") const {
    if (has(name)) return getenv(name);
    if (fallback.empty()) fail(std::string(name) + " is not set");
    return fallback;
  }
};

}  // namespace

LaunchEnv launch_env(const std::function<const char*(const char*)>& getenv) {
  LaunchEnv env;
  const char* rank_var = nullptr;
  const char* size_var = nullptr;
  const char* local_var = nullptr;
  if (getenv("RANK") != nullptr) {
    env.launcher = "torchrun";
    rank_var = "RANK", size_var = "WORLD_SIZE", local_var = "LOCAL_RANK";
  } else if (getenv("SLURM_PROCID") != nullptr) {
    env.launcher = "slurm";
    rank_var = "SLURM_PROCID", size_var = "SLURM_NTASKS", local_var = "SLURM_LOCALID";
  } else if (getenv("OMPI_COMM_WORLD_RANK") != nullptr) {
    env.launcher = "mpi";
    rank_var = "OMPI_COMM_WORLD_RANK", size_var = "OMPI_COMM_WORLD_SIZE", local_var = "OMPI_COMM_WORLD_LOCAL_RANK";
  } else {
    return env;
  }
  const Reader r{getenv, env.launcher};
  env.world_size = r.integer(size_var, 1, 1 << 20);
  env.rank = r.integer(rank_var, 0, env.world_size - 1);
  env.local_rank = r.integer(local_var, 0, env.world_size - 1);
  if (env.local_rank > env.rank) {
    r.fail(std::string(local_var) + "=" + std::to_string(env.local_rank) + " exceeds " + rank_var + "=" +
           std::to_string(env.rank));
  }
  const char* local_size_var = env.launcher == "torchrun" ? "LOCAL_WORLD_SIZE"
                               : env.launcher == "mpi"    ? "OMPI_COMM_WORLD_LOCAL_SIZE"
                                                          : nullptr;
  if (local_size_var != nullptr && r.has(local_size_var)) {  // unset: unknown, taken as 1
    env.local_world_size = r.integer(local_size_var, 1, env.world_size);
    if (env.local_rank >= env.local_world_size) {
      r.fail(std::string(local_var) + "=" + std::to_string(env.local_rank) + " is not below " + local_size_var + "=" +
             std::to_string(env.local_world_size));
    }
  }
  if (env.launcher == "torchrun") {
    env.master_addr = r.text("MASTER_ADDR");
    env.master_port = r.integer("MASTER_PORT", 1, 65535);
    env.agent_store =
        r.has("TORCHELASTIC_USE_AGENT_STORE") && std::string(getenv("TORCHELASTIC_USE_AGENT_STORE")) == "True";
    env.restart_count = r.integer("TORCHELASTIC_RESTART_COUNT", 0, 1 << 20, 0);
  } else if (env.launcher == "slurm") {
    env.master_addr = r.has("MASTER_ADDR") ? r.text("MASTER_ADDR") : r.text("SLURM_LAUNCH_NODE_IPADDR");
    env.master_port = r.integer("MASTER_PORT", 1, 65535, kDefaultPort);
  } else {
    env.master_addr = r.text("MASTER_ADDR", "127.0.0.1");
    env.master_port = r.integer("MASTER_PORT", 1, 65535, kDefaultPort);
  }
  return env;
}

LaunchEnv launch_env() {
  return launch_env([](const char* name) { return std::getenv(name); });
}

std::string LaunchEnv::describe() const {
  if (!distributed()) return "one process";
  return "rank " + std::to_string(rank) + " of " + std::to_string(world_size) + " (local " +
         std::to_string(local_rank) + "), " + launcher + ", store " + master_addr + ":" + std::to_string(master_port);
}

}  // namespace dbot::dist
