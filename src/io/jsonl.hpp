// JSON Lines for metrics (metrics.jsonl, spectral.jsonl): one compact JSON object per line.
//
// Each line goes to the OS in a single write, so a crash of the process loses at most the line
// being written; a torn last line (no trailing newline) is what such a crash leaves, and the
// functions here drop it rather than fail.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pg::io {

class JsonlWriter {
 public:
  // append = false truncates the file; append = true keeps its lines but drops a torn last one,
  // so the next line does not get glued onto it.
  JsonlWriter(const std::string& path, bool append);
  ~JsonlWriter();
  JsonlWriter(JsonlWriter&& other) noexcept;
  JsonlWriter& operator=(JsonlWriter&& other) noexcept;
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;

  void write(const nlohmann::json& object);  // object must be a JSON object
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// Every object in the file, in order. A torn last line is skipped; any other line that is not a
// JSON object is a UserError naming the file and line number.
std::vector<nlohmann::json> read_jsonl(const std::string& path);

// On resume: atomically rewrites the file keeping only lines whose "step" is <= step (lines with no
// numeric "step" are kept) and dropping a torn last line. Lines are kept byte for byte. A missing
// file is left missing.
void truncate_jsonl_after_step(const std::string& path, int64_t step);

}  // namespace pg::io
