// TensorBoard event files: scalars that `tensorboard --logdir DIR` reads, written without
// TensorFlow or a protobuf library.
//
// File = a sequence of records; each record is
//   uint64 length (little-endian) | uint32 masked_crc32c(those 8 bytes) | data | uint32 masked_crc32c(data)
// (io/crc32c.hpp for the mask). The data of each record is a serialised protobuf `Event`; the
// subset used here, with field numbers and protobuf wire types:
//   Event   { double wall_time = 1 (fixed64); int64 step = 2 (varint);
//             string file_version = 3 (bytes); Summary summary = 5 (bytes) }
//   Summary { repeated Value value = 1 (bytes) }
//   Value   { string tag = 1 (bytes); float simple_value = 2 (fixed32) }
// A field is written as its key varint (field_number << 3 | wire_type) and then its payload:
// a varint, 8 or 4 little-endian bytes, or a length varint and that many bytes.
// The first record of a file is an Event with file_version "brain.Event:2"; every later one holds
// one step's scalars. TensorBoard treats every events.out.tfevents.* file in a directory as part
// of one run, so a sweep directory shows its runs side by side.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace pg::io {

using Scalar = std::pair<std::string, float>;  // (tag, value)

// The Event protobuf of one step's scalars, and of the file-version header.
std::string encode_scalar_event(double wall_time, int64_t step, const std::vector<Scalar>& scalars);
std::string encode_file_version_event(double wall_time);
// One record: length, masked CRC of the length, data, masked CRC of the data.
std::string frame_record(std::string_view data);

// The scalars of one metrics record (a JSON object with a numeric "step"): every numeric leaf but
// "step" itself, its tag the key path joined by '/' ("train_loss", "sigma_max/h.0.attn.q.weight",
// "expert_load/3"). A record that names its subject with a string "name" (one line per matrix,
// as in spectral.jsonl) gets that name as the last tag component: {"name": "wte", "sigma_max": 2}
// gives "sigma_max/wte", and with an integer "slice" (one matrix of a 3-D expert tensor) the slice
// after it: "sigma_max/h.0.moe.experts.fc.weight/3". Booleans, strings and nulls are not scalars and are left out, so any
// metric added to a record later reaches TensorBoard without a change here.
std::vector<Scalar> scalars_of(const nlohmann::json& record);

// Appends records to one event file. Each record goes to the OS in one write, so a crash loses at
// most the record being written.
class EventWriter {
 public:
  // Creates (or truncates) path and writes the file-version record.
  explicit EventWriter(const std::string& path);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;  // owns its file descriptor; kept in place (std::optional)
  EventWriter& operator=(const EventWriter&) = delete;

  // wall_time in seconds since the Unix epoch; < 0 means now.
  void add_scalars(int64_t step, const std::vector<Scalar>& scalars, double wall_time = -1);
  // add_scalars(record["step"], scalars_of(record)); a record without a numeric step is ignored.
  void add_record(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  void write_record(std::string_view data);
  std::string path_;
  int fd_ = -1;
};

}  // namespace pg::io
