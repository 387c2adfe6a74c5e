#include "io/tensorboard.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "core/error.hpp"
#include "io/crc32c.hpp"

namespace pg::io {
namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {  // 7 bits per byte, low bits first
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(uint8_t(v)));
}

void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (uint64_t(field) << 3) | type); }

template <typename T>
void put_le(std::string& out, T v) {  // fixed-width little-endian, independent of the host
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  for (size_t i = 0; i < sizeof v; ++i) out.push_back(char(uint8_t(bits >> (8 * i))));
}

void put_bytes(std::string& out, uint32_t field, std::string_view bytes) {
  put_key(out, field, kBytes);
  put_varint(out, bytes.size());
  out.append(bytes);
}

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_key(e, 1, kFixed64);
  put_le(e, wall_time);
  if (step != 0) {  // proto3 leaves a zero scalar out
    put_key(e, 2, kVarint);
    put_varint(e, uint64_t(step));  // int64: two's complement as a varint
  }
  return e;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void flatten(const nlohmann::json& v, const std::string& tag, const std::string& suffix, std::vector<Scalar>& out) {
  if (v.is_number()) {
    out.emplace_back(tag + suffix, float(v.get<double>()));
  } else if (v.is_object()) {
    for (const auto& [k, sub] : v.items()) flatten(sub, tag + "/" + k, suffix, out);
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) flatten(v[i], tag + "/" + std::to_string(i), suffix, out);
  }
}

}  // namespace

std::string encode_scalar_event(double wall_time, int64_t step, const std::vector<Scalar>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string val;
    put_bytes(val, 1, tag);
    put_key(val, 2, kFixed32);
    put_le(val, value);
    put_bytes(summary, 1, val);
  }
  std::string e = event_header(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

std::string encode_file_version_event(double wall_time) {
  std::string e = event_header(wall_time, 0);
  put_bytes(e, 3, "brain.Event:2");
  return e;
}

std::string frame_record(std::string_view data) {
  std::string r;
  put_le(r, uint64_t(data.size()));
  put_le(r, mask_crc32c(crc32c(r.data(), 8)));
  r.append(data);
  put_le(r, mask_crc32c(crc32c(data)));
  return r;
}

std::vector<Scalar> scalars_of(const nlohmann::json& record) {
  std::vector<Scalar> out;
  if (!record.is_object()) return out;
  std::string suffix;
  if (auto it = record.find("name"); it != record.end() && it->is_string()) suffix = "/" + it->get<std::string>();
  const auto slice = record.find("slice");  // one of a 3-D tensor's matrices: tagged apart
  const bool sliced = !suffix.empty() && slice != record.end() && slice->is_number_integer();
  if (sliced) suffix += "/" + std::to_string(slice->get<int64_t>());
  for (const auto& [k, v] : record.items())
    if (k != "step" && !(sliced && k == "slice")) flatten(v, k, suffix, out);
  return out;
}

EventWriter::EventWriter(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw UserError(path + ": cannot create TensorBoard event file (" + std::strerror(errno) + ")");
  write_record(encode_file_version_event(now_s()));
}

EventWriter::~EventWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void EventWriter::add_scalars(int64_t step, const std::vector<Scalar>& scalars, double wall_time) {
  if (scalars.empty()) return;
  write_record(encode_scalar_event(wall_time < 0 ? now_s() : wall_time, step, scalars));
}

void EventWriter::add_record(const nlohmann::json& record) {
  const auto it = record.find("step");
  if (it == record.end() || !it->is_number()) return;
  add_scalars(it->get<int64_t>(), scalars_of(record));
}

void EventWriter::write_record(std::string_view data) {
  const std::string rec = frame_record(data);
  size_t done = 0;
  while (done < rec.size()) {
    const ssize_t n = ::write(fd_, rec.data() + done, rec.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw UserError(path_ + ": cannot write TensorBoard event (" + std::strerror(errno) + ")");
    done += size_t(n);
  }
}

}  // namespace pg::io
