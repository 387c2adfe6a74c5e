#include "data/prepare.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "data/shard.hpp"

namespace pg {
namespace {

// Collects one split's tokens and writes a shard each time shard_tokens have accumulated.
class ShardSink {
 public:
  ShardSink(std::string prefix, int64_t shard_tokens, std::vector<std::string>& files)
      : prefix_(std::move(prefix)), shard_tokens_(shard_tokens), files_(files) {}

  void append(const std::vector<int>& ids) {
    for (const int id : ids) {
      buffer_.push_back(uint16_t(id));
      if (int64_t(buffer_.size()) == shard_tokens_) flush();
    }
    total_ += int64_t(ids.size());
  }
  // Writes what is left; also the first shard when nothing was written yet (even if empty).
  void finish() {
    if (!buffer_.empty() || next_index_ == 0) flush();
  }
  int64_t total() const { return total_; }

 private:
  void flush() {
    char suffix[16];
    std::snprintf(suffix, sizeof suffix, "_%06d.bin", next_index_++);
    const std::string path = prefix_ + suffix;
    write_shard(path, buffer_);
    files_.push_back(path);
    buffer_.clear();
  }

  std::string prefix_;
  int64_t shard_tokens_;
  std::vector<std::string>& files_;
  std::vector<uint16_t> buffer_;
  int next_index_ = 0;
  int64_t total_ = 0;
};

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError(path + ": cannot open input text file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

PrepareResult prepare_corpus(const std::vector<std::string>& inputs, const std::string& out_dir,
                             double val_fraction, const Gpt2Tokenizer& tok, const std::string& name,
                             int64_t shard_tokens) {
  if (inputs.empty()) throw UserError("prepare: no input files given");
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw UserError("prepare: --val-fraction must be in [0, 1), got " + std::to_string(val_fraction));
  if (shard_tokens <= 0) throw UserError("prepare: shard size must be positive");
  if (tok.vocab_size() > 65536) throw UserError("prepare: vocabulary too large for uint16 shards");
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw UserError(out_dir + ": cannot create output directory (" + ec.message() + ")");

  PrepareResult result;
  std::vector<std::string> train_files, val_files;
  ShardSink train(out_dir + "/" + name + "_train", shard_tokens, train_files);
  ShardSink val(out_dir + "/" + name + "_val", shard_tokens, val_files);
  std::vector<int> ids;
  for (const std::string& path : inputs) {
    const std::string text = read_text(path);
    ids.assign(1, tok.eot());
    const std::vector<int> body = tok.encode(text);
    ids.insert(ids.end(), body.begin(), body.end());
    const double seen = double(train.total() + val.total());
    const bool to_val = val_fraction > 0.0 && double(val.total()) < val_fraction * seen;
    (to_val ? val : train).append(ids);
  }
  train.finish();
  if (val_fraction > 0.0) val.finish();

  result.train_tokens = train.total();
  result.val_tokens = val.total();
  result.files = train_files;
  result.files.insert(result.files.end(), val_files.begin(), val_files.end());
  return result;
}

std::string tokenize_to_string(const Gpt2Tokenizer& tok, std::string_view text) {
  std::string out;
  for (const int id : tok.encode(text)) {
    if (!out.empty()) out += ' ';
    out += std::to_string(id);
  }
  return out;
}

}  // namespace pg
