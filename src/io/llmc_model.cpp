#include "io/llmc_model.hpp"

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "optim/low_precision.hpp"

static_assert(std::endian::native == std::endian::little,
              "llm.c files are little-endian; a big-endian host would need byte swaps");

namespace pg::io {
namespace {

constexpr int kHeaderInts = 256;
constexpr int64_t kHeaderBytes = kHeaderInts * int64_t(sizeof(int32_t));

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw UserError(path + ": " + what); }

// bf16 is the top half of an fp32: widening is exact.
float bf16_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

uint16_t float_to_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(round_to_bf16(x));
  // A NaN whose payload sits only in the low half would truncate to infinity: keep it a NaN.
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) return uint16_t((u >> 16) | 0x0040u);
  return uint16_t(u >> 16);
}

// Checks the header's dimensions and returns the element count of all tensors; a dimension that
// is not positive, heads that do not divide channels, or Vp < V is an error naming the field.
int64_t checked_total(const std::string& path, const LlmcHeader& h) {
  const std::pair<const char*, int32_t> dims[] = {{"maxT", h.max_seq_len}, {"V", h.vocab_size},
                                                  {"L", h.n_layer},        {"NH", h.n_head},
                                                  {"C", h.d_model},        {"Vp", h.padded_vocab_size}};
  for (const auto& [name, v] : dims)
    if (v <= 0) fail(path, std::string("header ") + name + " = " + std::to_string(v) + ", expected a positive integer");
  if (h.d_model % h.n_head != 0)
    fail(path, "header C = " + std::to_string(h.d_model) + " is not divisible by NH = " + std::to_string(h.n_head));
  if (h.padded_vocab_size < h.vocab_size)
    fail(path, "header Vp = " + std::to_string(h.padded_vocab_size) + " is smaller than V = " +
                   std::to_string(h.vocab_size));
  // Bounds far above any real model keep every size below 2^62, so int64 arithmetic cannot overflow.
  const std::pair<const char*, int32_t> bounded[] = {{"L", h.n_layer}, {"C", h.d_model}};
  for (const auto& [name, v] : bounded)
    if (v > (1 << 16)) fail(path, std::string("header ") + name + " = " + std::to_string(v) + " is implausibly large");
  if (h.padded_vocab_size > (1 << 24) || h.max_seq_len > (1 << 24))
    fail(path, "header Vp = " + std::to_string(h.padded_vocab_size) + " or maxT = " + std::to_string(h.max_seq_len) +
                   " is implausibly large");
  int64_t total = 0;
  for (const int64_t s : llmc_tensor_sizes(h)) total += s;
  return total;
}

}  // namespace

std::array<int64_t, kLlmcTensors> llmc_tensor_sizes(const LlmcHeader& h) {
  const int64_t L = h.n_layer, C = h.d_model;
  return {int64_t(h.padded_vocab_size) * C, int64_t(h.max_seq_len) * C,  // wte, wpe
          L * C, L * C, L * 3 * C * C, L * 3 * C, L * C * C, L * C,      // ln1w ln1b qkvw qkvb attprojw attprojb
          L * C, L * C, L * 4 * C * C, L * 4 * C, L * C * 4 * C, L * C,  // ln2w ln2b fcw fcb fcprojw fcprojb
          C, C};                                                          // lnfw lnfb
}

const std::array<const char*, kLlmcTensors>& llmc_tensor_names() {
  static const std::array<const char*, kLlmcTensors> names = {
      "wte",  "wpe",  "ln1w", "ln1b", "qkvw", "qkvb",    "attprojw", "attprojb",
      "ln2w", "ln2b", "fcw",  "fcb",  "fcprojw", "fcprojb", "lnfw", "lnfb"};
  return names;
}

LlmcModel read_llmc_model(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, "cannot open");
  std::error_code ec;
  const auto file_bytes = int64_t(std::filesystem::file_size(path, ec));
  if (ec) fail(path, "cannot stat (" + ec.message() + ")");
  if (file_bytes < kHeaderBytes)
    fail(path, "truncated: " + std::to_string(file_bytes) + " bytes, shorter than the 1024-byte llm.c header");
  int32_t raw[kHeaderInts];
  f.read(reinterpret_cast<char*>(raw), kHeaderBytes);
  if (!f) fail(path, "read failed in the header");
  if (raw[0] != kLlmcModelMagic)
    fail(path, "bad magic " + std::to_string(raw[0]) + ", expected " + std::to_string(kLlmcModelMagic) +
                   " (an llm.c GPT-2 model file)");
  if (raw[1] != kLlmcVersionF32 && raw[1] != kLlmcVersionBF16)
    fail(path, "unsupported llm.c model version " + std::to_string(raw[1]) +
                   ", expected 3 (fp32) or 5 (bf16), both with a padded vocab");

  LlmcModel m;
  m.header = {raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]};
  const int64_t n = checked_total(path, m.header);
  const int64_t elem = m.header.version == kLlmcVersionF32 ? 4 : 2;
  const int64_t expected = kHeaderBytes + n * elem;
  if (file_bytes < expected)
    fail(path, "truncated: " + std::to_string(file_bytes) + " bytes, the header (L=" + std::to_string(m.header.n_layer) +
                   ", C=" + std::to_string(m.header.d_model) + ", Vp=" + std::to_string(m.header.padded_vocab_size) +
                   ", maxT=" + std::to_string(m.header.max_seq_len) + ") implies " + std::to_string(expected));
  if (file_bytes > expected)
    fail(path, std::to_string(file_bytes - expected) + " bytes after the last tensor: the header (L=" +
                   std::to_string(m.header.n_layer) + ", C=" + std::to_string(m.header.d_model) +
                   ") does not match the file's tensors");

  m.params.resize(size_t(n));
  if (elem == 4) {
    f.read(reinterpret_cast<char*>(m.params.data()), std::streamsize(n * 4));
  } else {
    std::vector<uint16_t> b(static_cast<size_t>(n));
    f.read(reinterpret_cast<char*>(b.data()), std::streamsize(n * 2));
    for (size_t i = 0; i < b.size(); ++i) m.params[i] = bf16_to_float(b[i]);
  }
  if (!f) fail(path, "read failed in the tensor data");
  return m;
}

void write_llmc_model(const std::string& path, const LlmcModel& model) {
  const LlmcHeader& h = model.header;
  const int64_t n = checked_total(path, h);
  if (int64_t(model.params.size()) != n)
    throw std::logic_error("write_llmc_model: " + std::to_string(model.params.size()) + " values for a header of " +
                           std::to_string(n));
  if (h.version != kLlmcVersionF32 && h.version != kLlmcVersionBF16)
    throw std::logic_error("write_llmc_model: version " + std::to_string(h.version));
  int32_t raw[kHeaderInts] = {};
  raw[0] = kLlmcModelMagic;
  raw[1] = h.version;
  raw[2] = h.max_seq_len;
  raw[3] = h.vocab_size;
  raw[4] = h.n_layer;
  raw[5] = h.n_head;
  raw[6] = h.d_model;
  raw[7] = h.padded_vocab_size;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail(path, "cannot create");
  f.write(reinterpret_cast<const char*>(raw), kHeaderBytes);
  if (h.version == kLlmcVersionF32) {
    f.write(reinterpret_cast<const char*>(model.params.data()), std::streamsize(n * 4));
  } else {
    std::vector<uint16_t> b(model.params.size());
    for (size_t i = 0; i < b.size(); ++i) b[i] = float_to_bf16(model.params[i]);
    f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(n * 2));
  }
  f.close();
  if (!f) fail(path, "write failed");
}

}  // namespace pg::io
