// run_local_job: `dbot pretrain --nproc N` starts N processes of itself on this machine as a data-parallel
// job, as `torchrun --nproc-per-node N` would, without Python:
//   - each child is this executable (/proc/self/exe) with `args`, and torchrun's variables: RANK, WORLD_SIZE,
//     LOCAL_RANK, LOCAL_WORLD_SIZE = N, MASTER_ADDR = 127.0.0.1, MASTER_PORT = a free port;
//   - SIGINT/SIGTERM sent to this process are passed to every child once (the children sit in their own
//     process group, so a terminal's Ctrl-C reaches them through here only, not twice); a second signal is
//     passed on as well (the children then end at once, as one process does);
//   - a child ends with SIGTERM when this process dies (PR_SET_PDEATHSIG), so none is left behind;
//   - when a child fails, the others get SIGTERM, and SIGKILL after `grace`.
// Returns the status to exit with: 0 when every child succeeded, else the first failing child's (128 + the
// signal for a child ended by one), after printing which rank failed.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace dbot::dist {

int run_local_job(int nproc, const std::vector<std::string>& args, std::chrono::seconds grace);

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released), for MASTER_PORT.
int free_local_port();

}  // namespace dbot::dist
