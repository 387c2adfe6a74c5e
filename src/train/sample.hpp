// Autoregressive sampling from the CPU model: temperature and top-k over the last position's
// logits, the context cropped to the last seq_len tokens. temperature 0 = greedy.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.hpp"
#include "model/cpu_gpt.hpp"

namespace pg {

struct SampleOptions {
  int max_tokens = 64;
  double temperature = 1.0;
  int top_k = 40;        // 0 = whole vocabulary
  int stop_token = -1;   // stop after emitting this id (e.g. end-of-text); -1 = never
};

// Returns only the new tokens.
std::vector<int> sample_tokens(CpuGpt<float>& model, const std::vector<float>& params, std::vector<int> context,
                               int seq_len, int vocab_size, const SampleOptions& opt, Rng& rng);

// Draws an index from logits[0..V) after temperature and top-k; exposed for tests.
int sample_from_logits(const float* logits, int V, double temperature, int top_k, Rng& rng);

}  // namespace pg
