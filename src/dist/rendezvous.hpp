// Rendezvous of a multi-process run: the ranks' places from the environment scripts/launch.sh
// (or torchrun, or a Slurm wrapper) sets, and the hand-out of one byte blob from rank 0 to every
// other rank over TCP (the ncclUniqueId for NcclComm; any bytes for the tests).
//
// Protocol (all integers little-endian, as the hosts are):
//   rank r > 0 connects to MASTER_ADDR:MASTER_PORT, retrying every 100 ms, and sends
//     u32 magic 'PGRV', u32 rank, u32 world_size;
//   rank 0 listens on MASTER_PORT (all interfaces), accepts until all world_size - 1 other ranks
//   have said hello (a duplicate rank or a different world size is an error), then sends each
//     u32 magic, u64 length, the blob.
// Both sides give up after dist.timeout_s with one line naming what was missing (which ranks
// never arrived; or that rank 0 could not be reached), so a rank that failed to start does not
// leave the others hanging.
// Test: tests/dist/test_rendezvous.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace pg::dist {

struct DistEnv {
  int rank = 0, local_rank = 0, world_size = 1, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. All unset: a single
// process (the defaults above). WORLD_SIZE set: RANK must be too; a malformed or inconsistent
// value is a UserError naming the variable. `get` is getenv (a parameter for the tests).
DistEnv dist_env_from_environment(const std::function<const char*(const char*)>& get = nullptr);

// Rank 0 passes the blob and every rank gets it back. Throws UserError on timeout or on a
// protocol violation.
std::vector<uint8_t> exchange_blob(const DistEnv& env, std::span<const uint8_t> blob, double timeout_s);

}  // namespace pg::dist
