// Running a sweep: one child process per run, one at a time or one per GPU at a time, each
// restartable.
//
//   DIR/sweep.json            the sweep file's path and the expanded runs (name, overrides)
//   DIR/<run>/config.json     the run's resolved config (written before it starts)
//   DIR/<run>/train.log       the child's stdout and stderr, every attempt appended
//   DIR/<run>/status.json     {"status": done|failed|interrupted|running, "attempts", "wall_s",
//                              "exit_code", "device", "error"}
//   DIR/<run>/metrics.jsonl, checkpoints/, events.out.tfevents.*   as written by `polargpt train`
//   DIR/summary.csv, DIR/summary.md   (sweep/summary.hpp), rewritten after every run
//
// Each run is `polargpt train --config DIR/<run>/config.json --out DIR/<run>` (or `--resume
// DIR/<run>` when it has a checkpoint) started as a child process of the same binary. A child
// process, not a call into the trainer, because a run that crashes, aborts, runs out of memory or
// leaves a CUDA context unusable takes only itself down; its memory (host and device) is returned
// in full before the next run; and running runs side by side on several GPUs is the same code with
// CUDA_VISIBLE_DEVICES set per child. Starting a process costs milliseconds against a run's
// seconds to hours.
//
// A run is finished when its latest checkpoint is at train.max_steps; finished runs are skipped
// when the sweep is started again, an unfinished run with a checkpoint resumes from it, and a
// failed run (non-zero exit) stays failed unless retry_failed. SIGINT/SIGTERM to the sweep are
// passed on to the running children, which save a checkpoint and stop; the sweep then stops
// launching and returns with `interrupted`.
#pragma once
#include <string>
#include <vector>

#include "sweep/sweep_spec.hpp"

namespace pg {

struct SweepOptions {
  std::string out_dir;
  std::string exe;                // the polargpt binary each run is started with
  std::vector<std::string> gpus;  // empty: one run at a time, environment as it is; else up to one
                                  // run per entry at a time, with CUDA_VISIBLE_DEVICES=<entry>
  bool retry_failed = false;
};

enum class RunState { fresh, resume, done, failed };
const char* state_name(RunState s);  // "run", "resume", "done (skip)", "failed (skip)"

struct RunStatus {
  std::string status;             // done | failed | interrupted | running; "" when never started
  int attempts = 0;
  double wall_s = 0;              // summed over attempts
  int exit_code = 0;
  std::string device;             // "" or the CUDA_VISIBLE_DEVICES value it ran with
  std::string error;              // the child's last error line, for failed runs
};
RunStatus read_run_status(const std::string& run_dir);

// What starting the sweep now would do with each run (in run order). Throws UserError when a run
// directory holds a config.json that differs from the run's config (base or set changed since).
std::vector<RunState> plan_sweep(const Sweep& sweep, const std::string& out_dir, bool retry_failed);

struct SweepResult {
  int done = 0, failed = 0, not_run = 0;
  bool interrupted = false;
};
SweepResult run_sweep(const Sweep& sweep, const SweepOptions& opt);

}  // namespace pg
