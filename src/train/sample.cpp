#include "train/sample.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace pg {

int sample_from_logits(const float* logits, int V, double temperature, int top_k, Rng& rng) {
  if (temperature <= 0.0) return int(std::max_element(logits, logits + V) - logits);
  std::vector<int> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  const int k = (top_k > 0 && top_k < V) ? top_k : V;
  // Ties broken by index so the draw is a pure function of the logits and the rng state.
  auto greater = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), greater);
  const double top = logits[idx[0]];
  std::vector<double> p(static_cast<size_t>(k));
  double total = 0.0;
  for (int i = 0; i < k; ++i) total += p[size_t(i)] = std::exp((logits[idx[size_t(i)]] - top) / temperature);
  double u = rng.uniform() * total;
  for (int i = 0; i < k; ++i) {
    u -= p[size_t(i)];
    if (u <= 0.0) return idx[size_t(i)];
  }
  return idx[size_t(k) - 1];
}

std::vector<int> sample_tokens(CpuGpt<float>& model, const std::vector<float>& params, std::vector<int> context,
                               int seq_len, int vocab_size, const SampleOptions& opt, Rng& rng) {
  std::vector<int> out;
  std::vector<int32_t> window;
  for (int i = 0; i < opt.max_tokens; ++i) {
    const size_t start = context.size() > size_t(seq_len) ? context.size() - size_t(seq_len) : 0;
    window.assign(context.begin() + long(start), context.end());
    const int Tn = int(window.size());
    model.forward(params.data(), window.data(), nullptr, 1, Tn);
    const float* last = model.logits() + int64_t(Tn - 1) * vocab_size;
    const int next = sample_from_logits(last, vocab_size, opt.temperature, opt.top_k, rng);
    out.push_back(next);
    context.push_back(next);
    if (next == opt.stop_token) break;
  }
  return out;
}

}  // namespace pg
