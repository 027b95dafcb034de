// Where this process sits in a distributed job, read from the environment its launcher sets, so that the
// launchers people already use start dbot unchanged:
//   torchrun (--no-python):  RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
//   SLURM (srun):            SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR / MASTER_PORT when set,
//                            else SLURM_LAUNCH_NODE_IPADDR and port 29500
//   Open MPI (mpirun):       OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK;
//                            MASTER_ADDR (required when the world spans machines, else 127.0.0.1) and
//                            MASTER_PORT (else 29500)
// Processes sharing this machine's CPUs (for the default thread count): LOCAL_WORLD_SIZE (torchrun),
// OMPI_COMM_WORLD_LOCAL_SIZE (Open MPI); 1 under SLURM, which binds each task to its own CPUs.
// The first launcher whose rank variable is set wins, in that order; none: one process. Incomplete or
// inconsistent values are a one-line error naming the variable.
#pragma once

#include <functional>
#include <string>

namespace dbot::dist {

struct LaunchEnv {
  std::string launcher = "none";  // none | torchrun | slurm | mpi
  int rank = 0, world_size = 1, local_rank = 0;
  int local_world_size = 1;  // processes sharing this machine's CPUs
  // torchrun's agent already serves the store at MASTER_ADDR:MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True):
  // every rank is a client, under the key prefix of the restart attempt (TORCHELASTIC_RESTART_COUNT).
  bool agent_store = false;
  int restart_count = 0;
  std::string master_addr;  // the TCPStore's host (rank 0 serves it)
  int master_port = 0;
  bool distributed() const { return world_size > 1; }
  std::string describe() const;  // e.g. "rank 1 of 4 (local 1), torchrun, store 10.0.0.1:29500"
};

// From `getenv` (a variable's value, or nullptr when unset): testable without touching the process.
LaunchEnv launch_env(const std::function<const char*(const char*)>& getenv);
// From this process's environment.
LaunchEnv launch_env();

}  // namespace dbot::dist
