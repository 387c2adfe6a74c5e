// Crash-safe files and checkpoint directories.
//
//   run_dir/checkpoints/00000100/{model.safetensors, optimizer.safetensors, state.json}
//   run_dir/checkpoints/latest            "00000100\n", rewritten atomically after each commit
//   run_dir/checkpoints/.tmp-<name>-<pid>/ a checkpoint being written (or left by a crash)
//
// A checkpoint becomes visible only by a rename of a fully written, fsynced directory, so a crash
// at any point leaves either the previous checkpoint or the new one, never a partial one.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pg::io {

// fsync a file or a directory (a directory's fsync makes renames and creations in it durable).
void fsync_path(const std::string& path);

// Writes path through a temporary file in the same directory: write, fsync, rename, fsync the dir.
// Readers see the old content or the new one, never a mix.
void write_file_atomic(const std::string& path, std::string_view content);

// The directory name of a step: 8 digits, zero-padded ("00000100"); longer if the step needs it.
std::string checkpoint_name(int64_t step);

// One checkpoint being written. Write files into dir(); commit() fsyncs them and the directory,
// moves it to final_dir() (atomically swapping out an existing checkpoint of the same step), fsyncs
// checkpoints/, then atomically rewrites checkpoints/latest. Destroying an uncommitted
// transaction removes its temporary directory and leaves everything else as it was.
class CheckpointTransaction {
 public:
  CheckpointTransaction(const std::string& run_dir, int64_t step);
  ~CheckpointTransaction();
  CheckpointTransaction(const CheckpointTransaction&) = delete;
  CheckpointTransaction& operator=(const CheckpointTransaction&) = delete;

  const std::string& dir() const { return tmp_dir_; }
  std::string final_dir() const;
  void commit();

 private:
  std::string ckpt_root_;  // run_dir/checkpoints
  std::string name_;
  std::string tmp_dir_;
  bool committed_ = false;
};

// True if dir holds model.safetensors, optimizer.safetensors and state.json.
bool is_complete_checkpoint(const std::string& dir);

// The path of the newest complete checkpoint of run_dir: the one checkpoints/latest names or, if
// that file is absent or names a missing/incomplete directory, the highest-numbered complete one.
// nullopt if there is none; UserError if latest names a missing/incomplete directory and there is
// no complete checkpoint to fall back on.
std::optional<std::string> find_latest_checkpoint(const std::string& run_dir);

// Keeps the keep_last highest-numbered complete checkpoints and the one latest names, removes
// the other complete ones (keep_last <= 0 keeps all), and removes temporary directories left by
// crashed writers. Incomplete numbered directories are left alone.
void prune_checkpoints(const std::string& run_dir, int keep_last);

}  // namespace pg::io
