// scripts/launch.sh tried as a user would: the environment of every rank, rank-prefixed output,
// a failing rank stopping the group with its exit code, and SIGTERM/SIGINT reaching every rank.
// Each case runs a small bash program as the "training command".
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "common/temp_dir.hpp"

namespace {

const std::string kLaunch = std::string(POLARGPT_SOURCE_DIR) + "/scripts/launch.sh";

// Runs a bash command line; returns its exit code.
int sh(const std::string& cmd) {
  const int st = std::system(("bash -c '" + cmd + "'").c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("launch.sh: every rank gets its RANK/LOCAL_RANK/WORLD_SIZE/... and its lines are prefixed", "[dist]") {
  pg::test::TempDir dir("launch");
  const std::string out = dir / "out.txt";
  // Node 1 of 2 with 3 processes each: global ranks 3, 4, 5.
  const int rc = sh(kLaunch + " --nnodes 2 --node-rank 1 --nproc-per-node 3 --master-addr 10.1.2.3 --master-port 29999 -- "
                    "bash -c \"echo env \\$RANK \\$LOCAL_RANK \\$WORLD_SIZE \\$LOCAL_WORLD_SIZE \\$MASTER_ADDR "
                    "\\$MASTER_PORT; echo to-stderr >&2\" > " + out + " 2>&1");
  const std::string text = slurp(out);
  CAPTURE(text);
  REQUIRE(rc == 0);
  for (int l = 0; l < 3; ++l) {
    const int r = 3 + l;
    REQUIRE(count(text, "[rank " + std::to_string(r) + "] env " + std::to_string(r) + " " + std::to_string(l) +
                            " 6 3 10.1.2.3 29999\n") == 1);
    REQUIRE(count(text, "[rank " + std::to_string(r) + "] to-stderr\n") == 1);
  }
  REQUIRE(count(text, "\n") == 6);  // nothing unprefixed

  // Defaults: one node, one process, 127.0.0.1:29500.
  REQUIRE(sh(kLaunch + " -- bash -c \"echo \\$RANK/\\$WORLD_SIZE \\$MASTER_ADDR:\\$MASTER_PORT\" > " + out) == 0);
  REQUIRE(slurp(out) == "[rank 0] 0/1 127.0.0.1:29500\n");
  // NVLink multicast off in every rank unless the caller chose otherwise.
  REQUIRE(sh("env -u NCCL_NVLS_ENABLE " + kLaunch + " -- bash -c \"echo nvls=\\$NCCL_NVLS_ENABLE\" > " + out) == 0);
  REQUIRE(slurp(out) == "[rank 0] nvls=0\n");
  REQUIRE(sh("NCCL_NVLS_ENABLE=1 " + kLaunch + " -- bash -c \"echo nvls=\\$NCCL_NVLS_ENABLE\" > " + out) == 0);
  REQUIRE(slurp(out) == "[rank 0] nvls=1\n");
  // A usage error is exit code 2 with one line.
  REQUIRE(sh(kLaunch + " --nproc-per-node two -- true 2> " + out) == 2);
  REQUIRE(count(slurp(out), "\n") == 1);
}

TEST_CASE("launch.sh: a rank exiting non-zero stops the others within seconds; the launcher exits with its code",
          "[dist]") {
  pg::test::TempDir dir("launch");
  const std::string out = dir / "out.txt";
  const auto t0 = std::chrono::steady_clock::now();
  // Rank 2 fails; ranks 0, 1, 3 would run for a minute (rank 3 even ignores SIGTERM and must be
  // killed after the grace period).
  const int rc = sh(kLaunch + " --nproc-per-node 4 --grace 1 -- bash -c \"if [ \\$RANK = 2 ]; then sleep 0.5; exit 7; fi; "
                    "if [ \\$RANK = 3 ]; then trap \\\"\\\" TERM; fi; sleep 60\" > " + out + " 2>&1");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CAPTURE(slurp(out));
  REQUIRE(rc == 7);
  REQUIRE(secs < 8.0);
  REQUIRE(count(slurp(out), "rank 2 exited with code 7") == 1);
}

TEST_CASE("launch.sh: SIGTERM and SIGINT sent to the launcher reach every rank", "[dist]") {
  pg::test::TempDir dir("launch");
  for (const std::string sig : {"TERM", "INT"}) {
    CAPTURE(sig);
    const std::string out = dir / ("out_" + sig + ".txt");
    // Each rank reports the signal and exits 0; the launcher then exits 0. (env --default-signal:
    // a background job of a script would start with SIGINT ignored.)
    const std::string rank_cmd =
        "trap \\\"echo got " + sig + "; exit 0\\\" " + sig + "; echo ready; while true; do sleep 0.05; done";
    const int rc = sh("env --default-signal=INT " + kLaunch + " --nproc-per-node 3 -- bash -c \"" + rank_cmd +
                      "\" > " + out + " 2>&1 & lp=$!; "
                      "for i in $(seq 100); do [ $(grep -c ready " + out + ") = 3 ] && break; sleep 0.05; done; "
                      "kill -s " + sig + " $lp; wait $lp");
    const std::string text = slurp(out);
    CAPTURE(text);
    REQUIRE(rc == 0);
    for (int r = 0; r < 3; ++r) REQUIRE(count(text, "[rank " + std::to_string(r) + "] got " + sig + "\n") == 1);
  }
}
