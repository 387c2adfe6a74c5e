#include "io/metrics_log.hpp"

#include <chrono>
#include <filesystem>

namespace fs = std::filesystem;

namespace pg::io {

MetricsLog::MetricsLog(const std::string& run_dir, const std::string& stem, bool append, bool tensorboard)
    : jsonl_(run_dir + "/" + stem + ".jsonl", append) {
  if (!tensorboard) return;
  const std::string suffix = ".polargpt." + stem;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("events.out.tfevents.") && name.ends_with(suffix)) fs::remove(e.path(), ec);
  }
  const auto t = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::system_clock::now().time_since_epoch());
  events_.emplace(run_dir + "/events.out.tfevents." + std::to_string(t.count()) + suffix);
  if (append)
    for (const auto& rec : read_jsonl(jsonl_.path())) events_->add_record(rec);
}

void MetricsLog::write(const nlohmann::json& record) {
  jsonl_.write(record);
  if (events_) events_->add_record(record);
}

}  // namespace pg::io
