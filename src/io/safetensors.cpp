#include "io/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian host would need byte swaps");

namespace pg::io {
namespace {

using ojson = nlohmann::ordered_json;  // keeps the header's key order, i.e. the writer's order

// The reference implementation refuses larger headers; a bigger length means a corrupt file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// 0 for an unknown dtype. Sub-byte dtypes (F4, F6) are not supported.
size_t lookup_dtype_size(const std::string& dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"I64", 8}, {"U64", 8}, {"F64", 8},
  };
  const auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

std::string shape_str(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw UserError(path + ": " + what);
}

// prod(shape) * elem_size, or false if it overflows 64 bits.
bool checked_nbytes(std::span<const int64_t> shape, size_t elem_size, uint64_t& out) {
  uint64_t n = elem_size;
  for (const int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, uint64_t(d), &n)) return false;
  }
  out = n;
  return true;
}

// A non-negative JSON integer that fits in int64, as int64.
bool json_count(const ojson& v, int64_t& out) {
  if (!v.is_number_unsigned()) return false;
  const uint64_t u = v.get<uint64_t>();
  if (u > uint64_t(std::numeric_limits<int64_t>::max())) return false;
  out = int64_t(u);
  return true;
}

}  // namespace

size_t dtype_size(const std::string& dtype) {
  const size_t s = lookup_dtype_size(dtype);
  if (s == 0) {
    throw UserError("unknown safetensors dtype '" + dtype +
                    "' (expected BOOL, U8, I8, F8_E4M3, F8_E5M2, F8_E8M0, I16, U16, F16, BF16, "
                    "I32, U32, F32, I64, U64 or F64)");
  }
  return s;
}

void write_safetensors(const std::string& path, std::span<const TensorRef> tensors,
                       const std::map<std::string, std::string>& metadata) {
  ojson header = ojson::object();
  if (!metadata.empty()) {
    ojson meta = ojson::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const TensorRef& t : tensors) {
    PG_CHECK(!t.name.empty() && t.name != "__metadata__", "bad tensor name '" + t.name + "'");
    PG_CHECK(!header.contains(t.name), "duplicate tensor name '" + t.name + "'");
    uint64_t expect = 0;
    PG_CHECK(checked_nbytes(t.shape, dtype_size(t.dtype), expect) && expect == t.nbytes,
             "tensor '" + t.name + "': nbytes " + std::to_string(t.nbytes) + " != prod" +
                 shape_str(t.shape) + " * sizeof(" + t.dtype + ")");
    PG_CHECK(t.data != nullptr || t.nbytes == 0, "tensor '" + t.name + "' has no data");
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // so the byte buffer starts 8-byte aligned

  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail(path, "cannot open for writing");
  const uint64_t n = text.size();
  f.write(reinterpret_cast<const char*>(&n), sizeof n);  // little-endian host (static_assert)
  f.write(text.data(), std::streamsize(text.size()));
  for (const TensorRef& t : tensors) {
    if (t.nbytes > 0) f.write(static_cast<const char*>(t.data), std::streamsize(t.nbytes));
  }
  f.close();
  if (!f) fail(path, "write failed (disk full?)");
}

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot open safetensors file (" + ec.message() + ")");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, "cannot open safetensors file");
  if (file_size < 8) {
    fail(path, "not a safetensors file: " + std::to_string(file_size) +
                   " bytes, expected at least an 8-byte header length");
  }
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), sizeof n);
  if (n > file_size - 8 || n > kMaxHeaderBytes) {
    fail(path, "header length " + std::to_string(n) + " does not fit in a file of " +
                   std::to_string(file_size) + " bytes (truncated or not safetensors)");
  }
  std::string text(n, '\0');
  f.read(text.data(), std::streamsize(n));
  if (!f) fail(path, "cannot read the " + std::to_string(n) + "-byte header");
  data_start_ = 8 + n;
  const uint64_t buffer_size = file_size - data_start_;

  const ojson header = ojson::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) fail(path, "header is not valid JSON");
  if (!header.is_object()) fail(path, "header is not a JSON object");

  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "__metadata__ is not an object of strings");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail(path, "__metadata__ key '" + k + "' is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "': ";
    if (!entry.is_object()) fail(path, where + "entry is not an object");
    for (const char* key : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(key)) fail(path, where + "missing \"" + key + "\"");
    }
    const ojson& jd = entry["dtype"];
    const ojson& js = entry["shape"];
    const ojson& jo = entry["data_offsets"];
    if (!jd.is_string()) fail(path, where + "dtype is not a string");
    TensorInfo t;
    t.dtype = jd.get<std::string>();
    const size_t elem = lookup_dtype_size(t.dtype);
    if (elem == 0) fail(path, where + "unknown dtype '" + t.dtype + "'");
    if (!js.is_array()) fail(path, where + "shape is not an array");
    for (const ojson& d : js) {
      int64_t v = 0;
      if (!json_count(d, v)) fail(path, where + "shape has an entry that is not a size >= 0");
      t.shape.push_back(v);
    }
    int64_t begin = 0, end = 0;
    if (!jo.is_array() || jo.size() != 2 || !json_count(jo[0], begin) || !json_count(jo[1], end) ||
        begin > end) {
      fail(path, where + "data_offsets must be [begin, end] with 0 <= begin <= end");
    }
    if (uint64_t(end) > buffer_size) {
      fail(path, where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                     "] run past the " + std::to_string(buffer_size) +
                     "-byte data buffer (file truncated?)");
    }
    uint64_t expect = 0;
    const bool fits = checked_nbytes(t.shape, elem, expect);
    if (!fits || expect != uint64_t(end - begin)) {
      fail(path, where + "data_offsets span " + std::to_string(end - begin) + " bytes but " +
                     t.dtype + " " + shape_str(t.shape) + " needs " +
                     (fits ? std::to_string(expect) : std::string("more than 2^64")) + " bytes");
    }
    t.offset = size_t(begin);
    t.nbytes = size_t(end - begin);
    auto [it, fresh] = tensors_.emplace(name, std::move(t));
    if (!fresh) fail(path, where + "appears twice in the header");
    spans.push_back({uint64_t(begin), uint64_t(end), &it->first});
  }

  // No two non-empty tensors may share a byte.
  std::stable_sort(spans.begin(), spans.end(),
                   [](const Span& a, const Span& b) { return a.begin < b.begin; });
  const Span* prev = nullptr;
  for (const Span& s : spans) {
    if (s.begin == s.end) continue;
    if (prev && s.begin < prev->end) {
      fail(path, "tensors '" + *prev->name + "' and '" + *s.name + "' overlap in the data buffer");
    }
    if (!prev || s.end > prev->end) prev = &s;
  }
  for (const Span& s : spans) order_.push_back(*s.name);
}

bool SafetensorsReader::has(const std::string& name) const { return tensors_.count(name) > 0; }

const TensorInfo& SafetensorsReader::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(path_, "no tensor '" + name + "'");
  return it->second;
}

std::vector<std::string> SafetensorsReader::names() const { return order_; }

void SafetensorsReader::read_into(const std::string& name, void* dst, const std::string& dtype,
                                  std::span<const int64_t> shape) const {
  const TensorInfo& t = info(name);
  if (t.dtype != dtype || !std::equal(t.shape.begin(), t.shape.end(), shape.begin(), shape.end())) {
    fail(path_, "tensor '" + name + "': expected " + dtype + " " + shape_str(shape) + ", found " +
                    t.dtype + " " + shape_str(t.shape));
  }
  read_raw(t, name, dst);
}

std::vector<uint8_t> SafetensorsReader::read_bytes(const std::string& name) const {
  const TensorInfo& t = info(name);
  std::vector<uint8_t> out(t.nbytes);
  read_raw(t, name, out.data());
  return out;
}

void SafetensorsReader::read_raw(const TensorInfo& t, const std::string& name, void* dst) const {
  if (t.nbytes == 0) return;
  std::ifstream f(path_, std::ios::binary);
  if (!f) fail(path_, "cannot reopen to read tensor '" + name + "'");
  f.seekg(std::streamoff(data_start_ + t.offset));
  f.read(static_cast<char*>(dst), std::streamsize(t.nbytes));
  if (!f || size_t(f.gcount()) != t.nbytes) {
    fail(path_, "tensor '" + name + "': file ended early (was it changed after opening?)");
  }
}

}  // namespace pg::io
