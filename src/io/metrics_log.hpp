// The metrics of a run: RUN/<stem>.jsonl, and with TensorBoard on, the same records as scalars in
// RUN/events.out.tfevents.<unix time>.polargpt.<stem>.
//
// Every record written goes to both, so a metric that a part of the trainer adds to its record
// (MFU, sigma_max, lipschitz_bound, expert_load, ...) shows in TensorBoard with no further change
// (io/tensorboard.hpp: scalars_of). On resume the trainer has already cut the JSONL back to the
// checkpoint's step; the event file is then rebuilt from the kept records, so TensorBoard never
// shows the steps that the resumed run recomputes twice.
#pragma once
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "io/jsonl.hpp"
#include "io/tensorboard.hpp"

namespace pg::io {

class MetricsLog {
 public:
  // append: keep the JSONL's records (resume); tensorboard: also write an event file, replacing
  // any earlier event file of this stem in run_dir.
  MetricsLog(const std::string& run_dir, const std::string& stem, bool append, bool tensorboard);

  void write(const nlohmann::json& record);
  const std::string& jsonl_path() const { return jsonl_.path(); }
  // The event file, or "" with TensorBoard off.
  std::string event_path() const { return events_ ? events_->path() : std::string(); }

 private:
  JsonlWriter jsonl_;
  std::optional<EventWriter> events_;
};

}  // namespace pg::io
