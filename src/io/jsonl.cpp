#include "io/jsonl.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string_view>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "io/checkpoint_dir.hpp"

namespace pg::io {
namespace {

[[noreturn]] void fail_errno(const std::string& path, const std::string& what) {
  throw UserError(path + ": " + what + " (" + std::strerror(errno) + ")");
}

std::optional<std::string> read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool is_blank(std::string_view s) { return s.find_first_not_of(" \t\r") == std::string_view::npos; }

nlohmann::json parse_line(std::string_view line) {
  return nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
}

// A line written by JsonlWriter ends with '\n'. A last line without one is kept when it is a whole
// JSON object (a file written by hand) and treated as torn otherwise.
struct SplitLines {
  std::vector<std::string_view> lines;  // without their '\n'
  size_t kept_bytes = 0;                // bytes of content the kept lines span
  bool dropped_torn = false;
  bool last_unterminated = false;       // the last kept line has no '\n'
};

SplitLines split_lines(std::string_view text) {
  SplitLines out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) {
      const std::string_view tail = text.substr(pos);
      if (parse_line(tail).is_object()) {
        out.lines.push_back(tail);
        out.kept_bytes = text.size();
        out.last_unterminated = true;
      } else if (!is_blank(tail)) {
        out.dropped_torn = true;
      }
      break;
    }
    out.lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
    out.kept_bytes = pos;
  }
  return out;
}

// True if the object has a numeric "step" greater than step.
bool step_after(const nlohmann::json& j, int64_t step) {
  const auto it = j.find("step");
  if (it == j.end()) return false;
  if (it->is_number_unsigned()) return step < 0 || it->get<uint64_t>() > uint64_t(step);
  if (it->is_number_integer()) return it->get<int64_t>() > step;
  if (it->is_number_float()) return it->get<double>() > double(step);
  return false;
}

}  // namespace

JsonlWriter::JsonlWriter(const std::string& path, bool append) : path_(path) {
  if (append) {
    // Repair the end of the file first: drop a torn last line, terminate a whole one.
    if (const auto text = read_text(path)) {
      const SplitLines s = split_lines(*text);
      if (s.dropped_torn) spdlog::warn("{}: dropping a torn last line", path);
      if (s.kept_bytes != text->size() && ::truncate(path.c_str(), off_t(s.kept_bytes)) != 0)
        fail_errno(path, "cannot drop the torn last line");
      if (s.last_unterminated) {
        std::ofstream f(path, std::ios::binary | std::ios::app);
        f << '\n';
        if (!f) fail_errno(path, "cannot append");
      }
    }
  }
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
  fd_ = ::open(path.c_str(), flags, 0644);
  if (fd_ < 0) fail_errno(path, "cannot open for writing");
}

JsonlWriter::~JsonlWriter() {
  if (fd_ >= 0) ::close(fd_);
}

JsonlWriter::JsonlWriter(JsonlWriter&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_) {
  other.fd_ = -1;
}

JsonlWriter& JsonlWriter::operator=(JsonlWriter&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void JsonlWriter::write(const nlohmann::json& object) {
  PG_CHECK(fd_ >= 0, "write to a moved-from JsonlWriter");
  PG_CHECK(object.is_object(), "a JSONL line must be an object");
  // Invalid UTF-8 in a string becomes U+FFFD rather than losing the whole line.
  const std::string line =
      object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + '\n';
  size_t done = 0;
  while (done < line.size()) {  // one write() in practice; the loop covers partial writes
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_errno(path_, "write failed");
    done += size_t(n);
  }
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  const auto text = read_text(path);
  if (!text) throw UserError(path + ": cannot open JSONL file");
  std::vector<nlohmann::json> out;
  const SplitLines s = split_lines(*text);
  for (size_t i = 0; i < s.lines.size(); ++i) {
    if (is_blank(s.lines[i])) continue;
    nlohmann::json j = parse_line(s.lines[i]);
    if (!j.is_object()) {
      throw UserError(path + ":" + std::to_string(i + 1) + ": expected one JSON object per line");
    }
    out.push_back(std::move(j));
  }
  return out;
}

void truncate_jsonl_after_step(const std::string& path, int64_t step) {
  const auto text = read_text(path);
  if (!text) return;
  const SplitLines s = split_lines(*text);
  std::string kept;
  kept.reserve(s.kept_bytes + 1);
  for (size_t i = 0; i < s.lines.size(); ++i) {
    if (is_blank(s.lines[i])) continue;
    const nlohmann::json j = parse_line(s.lines[i]);
    if (!j.is_object()) {
      throw UserError(path + ":" + std::to_string(i + 1) + ": expected one JSON object per line");
    }
    if (step_after(j, step)) continue;
    kept.append(s.lines[i]);
    kept.push_back('\n');
  }
  write_file_atomic(path, kept);
}

}  // namespace pg::io
