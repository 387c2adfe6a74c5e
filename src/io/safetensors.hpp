// safetensors, the checkpoint interchange format read directly by PyTorch and Hugging Face tools.
//
//   [u64 little-endian N][N bytes of JSON header, space-padded][byte buffer]
//   header = {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//             "__metadata__": {"<key>": "<value>", ...}}
//
// data_offsets are relative to the start of the byte buffer; data is row-major, little-endian.
// The writer lays tensors out back to back in the order given (no gaps, which the reference
// reader requires) and pads the header so the buffer starts 8-byte aligned.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace pg::io {

// Bytes per element of a safetensors dtype ("F32", "BF16", "I64", ...); UserError on unknown.
size_t dtype_size(const std::string& dtype);

// A tensor to write; data must hold nbytes == prod(shape) * dtype_size(dtype) bytes.
struct TensorRef {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;
};

// Writes the file in one pass (not atomically: checkpoints write into a directory that is renamed
// into place once complete). Names must be unique and not "__metadata__". UserError on I/O failure.
void write_safetensors(const std::string& path, std::span<const TensorRef> tensors,
                       const std::map<std::string, std::string>& metadata = {});

struct TensorInfo {
  std::string dtype;
  std::vector<int64_t> shape;
  size_t offset;  // from the start of the byte buffer
  size_t nbytes;
};

// Opens a file and validates its whole header up front: header length against the file size, JSON
// syntax, every entry's dtype, shape and offsets, nbytes == prod(shape) * dtype size, no overlap.
// Any problem is a one-line UserError naming the file (and the tensor). Tensor data is read on
// demand, by reopening the file, so a reader may be shared between threads.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::string& path);

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // UserError if absent
  std::vector<std::string> names() const;                 // in file (data offset) order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Copies the tensor into dst (nbytes of it) after checking that its dtype and shape are the
  // expected ones; UserError naming the file, the tensor, and expected vs found otherwise.
  void read_into(const std::string& name, void* dst, const std::string& dtype,
                 std::span<const int64_t> shape) const;
  std::vector<uint8_t> read_bytes(const std::string& name) const;

 private:
  void read_raw(const TensorInfo& t, const std::string& name, void* dst) const;

  std::string path_;
  size_t data_start_ = 0;  // 8 + header length
  std::vector<std::string> order_;
  std::unordered_map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace pg::io
