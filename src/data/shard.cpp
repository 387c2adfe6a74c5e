#include "data/shard.hpp"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

#include "core/error.hpp"

namespace pg {
namespace {

// Checks a shard's header against its file size; returns the token count.
int64_t check_header(const std::string& path, const int32_t* header, int64_t file_bytes) {
  if (header[0] != kShardMagic)
    throw UserError(path + ": bad magic " + std::to_string(header[0]) + " (expected " +
                    std::to_string(kShardMagic) + "; not an llm.c token shard)");
  if (header[1] != kShardVersion)
    throw UserError(path + ": unsupported version " + std::to_string(header[1]) + " (expected " +
                    std::to_string(kShardVersion) + ": uint16 GPT-2 tokens)");
  const int64_t count = header[2];
  if (count < 0) throw UserError(path + ": header gives a negative token count " + std::to_string(count));
  const int64_t expected = kShardHeaderBytes + 2 * count;
  if (file_bytes != expected)
    throw UserError(path + ": " + (file_bytes < expected ? "truncated" : "trailing bytes") + ": header says " +
                    std::to_string(count) + " tokens (" + std::to_string(expected) + " bytes) but file has " +
                    std::to_string(file_bytes) + " bytes");
  return count;
}

std::string short_header(const std::string& path, int64_t file_bytes) {
  return path + ": truncated: file has " + std::to_string(file_bytes) + " bytes, less than the " +
         std::to_string(kShardHeaderBytes) + "-byte header";
}

}  // namespace

void write_shard(const std::string& path, std::span<const uint16_t> tokens) {
  if (tokens.size() > size_t(std::numeric_limits<int32_t>::max()))
    throw UserError(path + ": " + std::to_string(tokens.size()) + " tokens do not fit one shard (int32 count)");
  int32_t header[256] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = int32_t(tokens.size());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw UserError(path + ": cannot open for writing (" + std::strerror(errno) + ")");
  f.write(reinterpret_cast<const char*>(header), sizeof header);
  f.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(tokens.size_bytes()));
  f.close();
  if (!f) throw UserError(path + ": write failed (disk full?)");
}

std::vector<uint16_t> read_shard(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw UserError(path + ": cannot open token shard (" + std::strerror(errno) + ")");
  const int64_t file_bytes = f.tellg();
  if (file_bytes < kShardHeaderBytes) throw UserError(short_header(path, file_bytes));
  f.seekg(0);
  int32_t header[256];
  f.read(reinterpret_cast<char*>(header), sizeof header);
  const int64_t count = check_header(path, header, file_bytes);
  std::vector<uint16_t> tokens(count);
  f.read(reinterpret_cast<char*>(tokens.data()), std::streamsize(count * 2));
  if (!f) throw UserError(path + ": read failed");
  return tokens;
}

std::vector<std::string> expand_shards(const std::string& pattern, const std::string& key) {
  glob_t g{};
  const int rc = glob(pattern.c_str(), 0, nullptr, &g);  // results come sorted
  std::vector<std::string> files;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) files.emplace_back(g.gl_pathv[i]);
  globfree(&g);
  if (files.empty()) throw UserError(key + ": no files match '" + pattern + "'");
  std::sort(files.begin(), files.end());
  return files;
}

MappedShard::MappedShard(const std::string& path) : path_(path) {
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) throw UserError(path + ": cannot open token shard (" + std::strerror(errno) + ")");
  struct stat st{};
  if (fstat(fd, &st) != 0) {
    close(fd);
    throw UserError(path + ": cannot stat (" + std::strerror(errno) + ")");
  }
  const int64_t file_bytes = st.st_size;
  if (file_bytes < kShardHeaderBytes) {
    close(fd);
    throw UserError(short_header(path, file_bytes));
  }
  map_ = mmap(nullptr, size_t(file_bytes), PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);  // the mapping keeps the file alive
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw UserError(path + ": mmap failed (" + std::strerror(errno) + ")");
  }
  map_bytes_ = size_t(file_bytes);
  try {
    n_tokens_ = check_header(path, static_cast<const int32_t*>(map_), file_bytes);
  } catch (...) {
    release();
    throw;
  }
  tokens_ = reinterpret_cast<const uint16_t*>(static_cast<const char*>(map_) + kShardHeaderBytes);
}

MappedShard::MappedShard(MappedShard&& other) noexcept { *this = std::move(other); }

MappedShard& MappedShard::operator=(MappedShard&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    std::swap(map_, other.map_);
    std::swap(map_bytes_, other.map_bytes_);
    std::swap(tokens_, other.tokens_);
    std::swap(n_tokens_, other.n_tokens_);
  }
  return *this;
}

MappedShard::~MappedShard() { release(); }

void MappedShard::release() {
  if (map_) munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  tokens_ = nullptr;
  n_tokens_ = 0;
}

}  // namespace pg
