// GPT-2 model files in llm.c's format (the `gpt2_124M.bin` family), read and written:
//
//   int32 header[256]  [0] 20240326 (magic)   [1] version: 3 = fp32 tensors, 5 = bf16 tensors
//                      [2] maxT (positions)   [3] V (vocab)   [4] L (layers)   [5] NH (heads)
//                      [6] C (channels)       [7] Vp (vocab padded, >= V, usually a multiple of 128)
//                      the rest zero
//   then 16 tensors back to back, row-major, little-endian, in this fixed order:
//     wte [Vp, C]   wpe [maxT, C]
//     ln1w [L, C]   ln1b [L, C]   qkvw [L, 3C, C]   qkvb [L, 3C]   attprojw [L, C, C]   attprojb [L, C]
//     ln2w [L, C]   ln2b [L, C]   fcw [L, 4C, C]    fcb [L, 4C]    fcprojw [L, C, 4C]   fcprojb [L, C]
//     lnfw [C]      lnfb [C]
//   Matrices are [out, in] (y = x W^T + b); qkvw's rows are q's C rows, then k's, then v's. The
//   LM head is wte itself (tied). Rows V..Vp-1 of wte are padding no token ever uses.
//
// This file knows the format only; model/gpt2_layout.hpp maps it onto our parameter table.
// Readers check magic, version, header sanity and that the file is exactly as long as the header
// implies; every error is one line naming the file. Test: tests/io/test_llmc_model.cpp.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace pg::io {

constexpr int32_t kLlmcModelMagic = 20240326;
constexpr int32_t kLlmcVersionF32 = 3;
constexpr int32_t kLlmcVersionBF16 = 5;
constexpr int kLlmcTensors = 16;

struct LlmcHeader {
  int32_t version = kLlmcVersionF32;
  int32_t max_seq_len = 0;        // maxT
  int32_t vocab_size = 0;         // V
  int32_t n_layer = 0;            // L
  int32_t n_head = 0;             // NH
  int32_t d_model = 0;            // C
  int32_t padded_vocab_size = 0;  // Vp
};

// Element counts of the 16 tensors in file order, from the header's dimensions.
std::array<int64_t, kLlmcTensors> llmc_tensor_sizes(const LlmcHeader& h);
// Their names as llm.c's source calls them (wte, wpe, ln1w, ..., lnfb), for messages and tests.
const std::array<const char*, kLlmcTensors>& llmc_tensor_names();

struct LlmcModel {
  LlmcHeader header;
  std::vector<float> params;  // the 16 tensors concatenated in file order, widened to fp32
};

// Reads and validates a file (bf16 tensors are widened exactly to fp32).
LlmcModel read_llmc_model(const std::string& path);

// Writes model.params (sum of llmc_tensor_sizes elements) with the header's version: fp32 as is,
// bf16 rounded to nearest even. Not atomic (an export, not a checkpoint).
void write_llmc_model(const std::string& path, const LlmcModel& model);

}  // namespace pg::io
