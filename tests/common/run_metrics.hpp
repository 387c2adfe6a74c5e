// Reading a training run's RUN/metrics.jsonl in tests.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/jsonl.hpp"

namespace pg::test {

inline std::vector<nlohmann::json> run_records(const std::string& run_dir) {
  return io::read_jsonl(run_dir + "/metrics.jsonl");
}

// train_loss of every record (each logged step must have one).
inline std::vector<double> run_losses(const std::string& run_dir) {
  std::vector<double> out;
  for (const auto& j : run_records(run_dir)) out.push_back(j.at("train_loss").get<double>());
  return out;
}

// `key` of the records that have it (val_loss: the eval steps only).
inline std::vector<double> run_column(const std::string& run_dir, const char* key) {
  std::vector<double> out;
  for (const auto& j : run_records(run_dir))
    if (j.contains(key)) out.push_back(j.at(key).get<double>());
  return out;
}

}  // namespace pg::test
