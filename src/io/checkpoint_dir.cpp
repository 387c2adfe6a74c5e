#include "io/checkpoint_dir.hpp"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28)
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/error.hpp"

namespace fs = std::filesystem;

namespace pg::io {
namespace {

constexpr const char* kCheckpointFiles[] = {"model.safetensors", "optimizer.safetensors",
                                            "state.json"};

[[noreturn]] void fail_errno(const std::string& path, const std::string& what) {
  throw UserError(path + ": " + what + " (" + std::strerror(errno) + ")");
}

// Temporary directories of transactions alive in this process; prune must not remove them.
std::mutex g_live_mutex;
std::set<std::string> g_live_tmp_dirs;

// Compared by canonical path, so different spellings of the run directory agree.
std::string canonical_key(const std::string& dir) {
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(dir, ec);
  return ec ? fs::path(dir).lexically_normal().string() : p.string();
}

void set_live(const std::string& dir, bool live) {
  const std::string key = canonical_key(dir);
  std::lock_guard lock(g_live_mutex);
  if (live) g_live_tmp_dirs.insert(key);
  else g_live_tmp_dirs.erase(key);
}

bool is_live(const std::string& dir) {
  const std::string key = canonical_key(dir);
  std::lock_guard lock(g_live_mutex);
  return g_live_tmp_dirs.count(key) > 0;
}

std::string parent_dir(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// A checkpoint directory name is all digits; returns its step, or nullopt.
std::optional<int64_t> parse_step(const std::string& name) {
  int64_t step = 0;
  const char* end = name.data() + name.size();
  const auto [p, ec] = std::from_chars(name.data(), end, step);
  if (name.empty() || ec != std::errc() || p != end || name.front() == '-' || name.front() == '+')
    return std::nullopt;
  return step;
}

// The name stored in checkpoints/latest, trimmed; "" if absent, unreadable or not a plain name.
std::string read_latest_name(const std::string& ckpt_root) {
  std::ifstream f(ckpt_root + "/latest");
  if (!f) return "";
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  s = s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
  if (s == "." || s == ".." || s.find('/') != std::string::npos) return "";
  return s;
}

struct Numbered {
  int64_t step;
  std::string name;
};

// Complete checkpoints under ckpt_root, highest step first.
std::vector<Numbered> complete_checkpoints(const std::string& ckpt_root) {
  std::vector<Numbered> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(ckpt_root, ec)) {
    const std::string name = e.path().filename().string();
    const auto step = parse_step(name);
    if (step && is_complete_checkpoint(e.path().string())) out.push_back({*step, name});
  }
  std::sort(out.begin(), out.end(),
            [](const Numbered& a, const Numbered& b) { return a.step > b.step; });
  return out;
}

void fsync_tree(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() || e.is_directory()) fsync_path(e.path().string());
  }
  fsync_path(dir.string());
}

}  // namespace

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_errno(path, "cannot open to fsync");
  // Some filesystems cannot fsync a directory (EINVAL); there is nothing more to do then.
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    const int err = errno;
    ::close(fd);
    errno = err;
    fail_errno(path, "fsync failed");
  }
  ::close(fd);
}

void write_file_atomic(const std::string& path, std::string_view content) {
  const std::string dir = parent_dir(path);
  const std::string tmp =
      dir + "/." + fs::path(path).filename().string() + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno(path, "cannot create temporary file " + tmp);
  const auto give_up = [&](const std::string& what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    errno = err;
    fail_errno(path, what);
  };
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) give_up("write failed");
    done += size_t(n);
  }
  if (::fsync(fd) != 0) give_up("fsync failed");
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail_errno(path, "close failed");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    errno = err;
    fail_errno(path, "cannot rename " + tmp + " into place");
  }
  fsync_path(dir);
}

std::string checkpoint_name(int64_t step) {
  PG_CHECK(step >= 0, "negative checkpoint step " + std::to_string(step));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08lld", static_cast<long long>(step));
  return buf;
}

bool is_complete_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  for (const char* f : kCheckpointFiles) {
    if (!fs::is_regular_file(fs::path(dir) / f, ec)) return false;
  }
  return true;
}

CheckpointTransaction::CheckpointTransaction(const std::string& run_dir, int64_t step)
    : ckpt_root_(run_dir + "/checkpoints"), name_(checkpoint_name(step)) {
  tmp_dir_ = ckpt_root_ + "/.tmp-" + name_ + "-" + std::to_string(::getpid());
  std::error_code ec;
  fs::create_directories(ckpt_root_, ec);
  if (ec) {
    throw UserError(ckpt_root_ + ": cannot create checkpoint directory (" + ec.message() + ")");
  }
  fs::remove_all(tmp_dir_, ec);  // left by an earlier process that had our pid
  if (!fs::create_directory(tmp_dir_, ec) || ec) {
    throw UserError(tmp_dir_ + ": cannot create temporary checkpoint directory (" +
                    ec.message() + ")");
  }
  set_live(tmp_dir_, true);
}

CheckpointTransaction::~CheckpointTransaction() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_dir_, ec);
    if (ec) spdlog::warn("{}: cannot remove uncommitted checkpoint ({})", tmp_dir_, ec.message());
  }
  set_live(tmp_dir_, false);
}

std::string CheckpointTransaction::final_dir() const { return ckpt_root_ + "/" + name_; }

void CheckpointTransaction::commit() {
  PG_CHECK(!committed_, "checkpoint " + name_ + " committed twice");
  fsync_tree(tmp_dir_);
  const std::string final = final_dir();
  std::error_code ec;
  if (fs::exists(final, ec)) {
    // Swap the new directory with the old one in one step, so a crash leaves one of them in
    // place; the old one then sits at tmp_dir_ (a .tmp-* name, removed here or by prune).
    if (::renameat2(AT_FDCWD, tmp_dir_.c_str(), AT_FDCWD, final.c_str(), RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS) fail_errno(final, "cannot swap in " + tmp_dir_);
      // No atomic exchange on this filesystem: move the old one aside first.
      const std::string old = tmp_dir_ + "-old";
      fs::remove_all(old, ec);
      if (::rename(final.c_str(), old.c_str()) != 0) fail_errno(final, "cannot move aside");
      if (::rename(tmp_dir_.c_str(), final.c_str()) != 0) fail_errno(final, "rename failed");
      fs::rename(old, tmp_dir_, ec);
    }
    fsync_path(ckpt_root_);
    fs::remove_all(tmp_dir_, ec);
  } else {
    if (::rename(tmp_dir_.c_str(), final.c_str()) != 0) fail_errno(final, "rename failed");
    fsync_path(ckpt_root_);
  }
  write_file_atomic(ckpt_root_ + "/latest", name_ + "\n");
  committed_ = true;
  set_live(tmp_dir_, false);
}

std::optional<std::string> find_latest_checkpoint(const std::string& run_dir) {
  const std::string root = run_dir + "/checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return std::nullopt;
  const std::string latest = read_latest_name(root);
  if (!latest.empty() && is_complete_checkpoint(root + "/" + latest)) return root + "/" + latest;

  const auto all = complete_checkpoints(root);
  if (!all.empty()) {
    if (!latest.empty()) {
      spdlog::warn("{}/latest names '{}', which is missing or incomplete; using {} instead", root,
                   latest, all.front().name);
    }
    return root + "/" + all.front().name;
  }
  if (!latest.empty()) {
    throw UserError(root + "/latest names '" + latest +
                    "', which is missing or incomplete (expected model.safetensors, "
                    "optimizer.safetensors and state.json), and no other complete checkpoint "
                    "exists");
  }
  return std::nullopt;
}

void prune_checkpoints(const std::string& run_dir, int keep_last) {
  const std::string root = run_dir + "/checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return;
  const auto remove = [](const fs::path& p) {
    std::error_code rec;
    fs::remove_all(p, rec);
    if (rec) spdlog::warn("{}: cannot remove ({})", p.string(), rec.message());
  };

  if (keep_last > 0) {
    const std::string latest = read_latest_name(root);
    const auto all = complete_checkpoints(root);
    for (size_t i = size_t(keep_last); i < all.size(); ++i) {
      if (all[i].name != latest) remove(fs::path(root) / all[i].name);
    }
  }
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(".tmp-") && !is_live(e.path().string())) stale.push_back(e.path());
  }
  for (const auto& p : stale) remove(p);
}

}  // namespace pg::io
