// The Trainer: the step loop that ties data, model, optimizer, evaluation, logging and
// checkpoints together.
//
// One step = grad_accum micro-batches of (batch_size, seq_len) forward + backward, gradients
// averaged; global-norm clip; a non-finite loss or gradient norm skips the update (counted, and
// max_skipped in a row stop the run with an error, the last good checkpoint kept); then the
// optimizer update at the scheduled learning rate. Every log_every steps a progress line and a
// metrics.jsonl record; every eval_every steps val loss and accuracy; every checkpoint_every
// steps (and at the end, and on SIGINT/SIGTERM) an atomic checkpoint. A resumed run restores
// weights, optimizer moments, counters and the data position, so on the CPU it reproduces the
// uninterrupted run's losses exactly. Data-parallel runs (dist/) do the same on every rank with
// the gradients averaged over ranks; a signal seen by any rank stops all of them after the same
// step.
#pragma once
#include <functional>
#include <span>
#include <string>

#include "config/config.hpp"
#include "dist/comm.hpp"

namespace pg {

class TrainEngine;  // train/engine.hpp

struct RunOptions {
  std::string run_dir;       // where config.json, metrics.jsonl and checkpoints/ go
  bool resume = false;       // continue from run_dir's latest checkpoint
  // Test hook: called on every rank with (step index, that rank's gradients) after backward,
  // before they are reduced over the ranks and checked for finiteness.
  std::function<void(int, std::span<float>)> after_backward;
};

struct RunSummary {
  int steps_done = 0;
  double final_train_loss = 0, final_val_loss = 0, final_val_acc = 0;
  bool interrupted = false;
};

// Runs training; throws UserError for bad input, returns the summary otherwise. train.device
// picks the engine (train/engine.hpp): cpu, cuda (one GPU), or auto (cuda when this build and
// machine have a GPU and the CUDA trainer supports the config, else cpu). With
// dist.cpu_ranks = N > 1 the CPU run is data-parallel over N ranks as threads of this process.
// With WORLD_SIZE in the environment (scripts/launch.sh) a cuda run is one rank of a
// data-parallel run over NCCL on GPU LOCAL_RANK (any WORLD_SIZE, 1 included).
RunSummary train(const Config& cfg, const RunOptions& opt);

// One rank of a data-parallel run (world size 1 = the plain single-process run): rank r reads its
// slice of every global batch (batch_size * grad_accum * world_size sequences), gradients are
// averaged over ranks (dist/data_parallel.hpp); rank 0 logs, writes metrics and checkpoints and
// samples, every rank evaluates its slice of the val batches. The caller owns signal handling
// and threads (train() does both).
RunSummary train_rank(const Config& cfg, const RunOptions& opt, dist::Comm& comm);

// The step loop over any engine (what train_rank and the CUDA run share); run_dir must exist.
RunSummary run_training(const Config& cfg, const RunOptions& opt, TrainEngine& engine);
// Creates opt.run_dir (UserError naming --out when it cannot).
void prepare_run_dir(const RunOptions& opt);

struct EvalResult {
  double loss = 0, acc = 0;
  int64_t tokens = 0;
};
// Evaluates a checkpoint directory on its config's val split (max_batches 0 = the whole split).
EvalResult evaluate_checkpoint(const std::string& ckpt_dir, int max_batches);

}  // namespace pg
