#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "io/safetensors.hpp"
#include "common/temp_dir.hpp"

using pg::io::SafetensorsReader;
using pg::io::TensorRef;
using pg::test::TempDir;

namespace {

// A safetensors file from a raw header string and buffer; the header length written is the
// header's own unless n_override is given.
void write_raw(const std::string& path, const std::string& header, size_t buffer_bytes,
               std::optional<uint64_t> n_override = std::nullopt) {
  const uint64_t n = n_override.value_or(header.size());
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &n, 8);
  bytes += header;
  bytes += std::string(buffer_bytes, '\x5a');
  pg::test::spit(path, bytes);
}

uint64_t header_length(const std::string& path) {
  const std::string bytes = pg::test::slurp(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  return n;
}

}  // namespace

TEST_CASE("safetensors: tensors of several dtypes and shapes round-trip with metadata", "[io]") {
  TempDir tmp;
  const uint64_t seed = 1234;
  INFO("seed " << seed);
  pg::Rng rng(seed);

  std::vector<float> f32(3 * 4);
  for (auto& x : f32) x = float(rng.normal());
  std::vector<double> f64(5);
  for (auto& x : f64) x = rng.normal();
  std::vector<uint16_t> bf16(2 * 3 * 2);
  for (auto& x : bf16) x = uint16_t(rng.next_u64());
  const int64_t scalar = -77;
  std::vector<uint8_t> u8(7);
  for (auto& x : u8) x = uint8_t(rng.next_u64());

  const std::vector<TensorRef> tensors = {
      {"wte", "F32", {3, 4}, f32.data(), f32.size() * 4},
      {"h.0.ln.g", "F64", {5}, f64.data(), f64.size() * 8},
      {"h.0.attn.w", "BF16", {2, 3, 2}, bf16.data(), bf16.size() * 2},
      {"step", "I64", {}, &scalar, 8},
      {"empty", "I32", {0, 4}, nullptr, 0},
      {"bytes", "U8", {7}, u8.data(), u8.size()},
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "100"}};
  const std::string path = tmp / "model.safetensors";
  pg::io::write_safetensors(path, tensors, meta);

  // Header padded to a multiple of 8; tensors back to back after it.
  const uint64_t n = header_length(path);
  REQUIRE(n % 8 == 0);
  size_t total = 0;
  for (const auto& t : tensors) total += t.nbytes;
  REQUIRE(std::filesystem::file_size(path) == 8 + n + total);

  const SafetensorsReader r(path);
  REQUIRE(r.names() == std::vector<std::string>{"wte", "h.0.ln.g", "h.0.attn.w", "step", "empty",
                                                 "bytes"});
  REQUIRE(r.metadata() == meta);
  REQUIRE(r.has("wte"));
  REQUIRE_FALSE(r.has("wpe"));
  size_t offset = 0;
  for (const auto& t : tensors) {
    const auto& info = r.info(t.name);
    REQUIRE(info.dtype == t.dtype);
    REQUIRE(info.shape == t.shape);
    REQUIRE(info.offset == offset);
    REQUIRE(info.nbytes == t.nbytes);
    offset += t.nbytes;
  }

  std::vector<float> f32_back(f32.size());
  r.read_into("wte", f32_back.data(), "F32", std::vector<int64_t>{3, 4});
  REQUIRE(f32_back == f32);
  std::vector<double> f64_back(f64.size());
  r.read_into("h.0.ln.g", f64_back.data(), "F64", std::vector<int64_t>{5});
  REQUIRE(f64_back == f64);
  std::vector<uint16_t> bf16_back(bf16.size());
  r.read_into("h.0.attn.w", bf16_back.data(), "BF16", std::vector<int64_t>{2, 3, 2});
  REQUIRE(bf16_back == bf16);
  int64_t scalar_back = 0;
  r.read_into("step", &scalar_back, "I64", std::span<const int64_t>{});
  REQUIRE(scalar_back == scalar);
  r.read_into("empty", nullptr, "I32", std::vector<int64_t>{0, 4});
  REQUIRE(r.read_bytes("empty").empty());
  REQUIRE(r.read_bytes("bytes") == u8);
}

TEST_CASE("safetensors: the header is the standard JSON layout", "[io]") {
  TempDir tmp;
  const float x[2] = {1.0f, 2.0f};
  const std::vector<TensorRef> tensors = {{"a", "F32", {2}, x, sizeof x}};
  const std::string path = tmp / "a.safetensors";
  pg::io::write_safetensors(path, tensors, {{"k", "v"}});
  const std::string bytes = pg::test::slurp(path);
  const auto j = nlohmann::json::parse(bytes.substr(8, header_length(path)));
  REQUIRE(j["a"]["dtype"] == "F32");
  REQUIRE(j["a"]["shape"] == nlohmann::json::array({2}));
  REQUIRE(j["a"]["data_offsets"] == nlohmann::json::array({0, 8}));
  REQUIRE(j["__metadata__"]["k"] == "v");

  // Without metadata there is no __metadata__ entry at all.
  pg::io::write_safetensors(path, tensors);
  const auto j2 = nlohmann::json::parse(pg::test::slurp(path).substr(8, header_length(path)));
  REQUIRE_FALSE(j2.contains("__metadata__"));
}

TEST_CASE("safetensors: each kind of corruption is a UserError naming the file", "[io]") {
  TempDir tmp;
  const std::string path = tmp / "bad.safetensors";
  using Catch::Contains;

  SECTION("truncated buffer") {
    const float x[4] = {1, 2, 3, 4};
    const std::vector<TensorRef> tensors = {{"w", "F32", {4}, x, sizeof x}};
    pg::io::write_safetensors(path, tensors);
    std::filesystem::resize_file(path, std::filesystem::file_size(path) - 1);
    REQUIRE_THROWS_AS(SafetensorsReader(path), pg::UserError);
    REQUIRE_THROWS_WITH(SafetensorsReader(path), Contains(path) && Contains("'w'"));
  }
  SECTION("header length beyond the file") {
    write_raw(path, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4, 1000);
    REQUIRE_THROWS_WITH(SafetensorsReader(path), Contains(path) && Contains("header length"));
  }
  SECTION("file shorter than the length field") {
    pg::test::spit(path, "abc");
    REQUIRE_THROWS_WITH(SafetensorsReader(path), Contains(path));
  }
  SECTION("missing file") {
    REQUIRE_THROWS_AS(SafetensorsReader(tmp / "nope.safetensors"), pg::UserError);
  }
  SECTION("bad JSON") {
    write_raw(path, R"({"w":{"dtype":"F32",)", 4);
    REQUIRE_THROWS_WITH(SafetensorsReader(path), Contains(path) && Contains("JSON"));
  }
  SECTION("overlapping offsets") {
    write_raw(path,
              R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
              R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
              24);
    REQUIRE_THROWS_WITH(SafetensorsReader(path), Contains(path) && Contains("overlap") &&
                                                     Contains("'a'") && Contains("'b'"));
  }
  SECTION("nbytes does not match the shape") {
    write_raw(path, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", 12);
    REQUIRE_THROWS_WITH(SafetensorsReader(path), Contains(path) && Contains("'w'"));
  }
  SECTION("unknown dtype") {
    write_raw(path, R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4);
    REQUIRE_THROWS_WITH(SafetensorsReader(path),
                        Contains(path) && Contains("'w'") && Contains("F33"));
  }
  SECTION("negative dimension") {
    write_raw(path, R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4);
    REQUIRE_THROWS_WITH(SafetensorsReader(path), Contains(path) && Contains("'w'"));
  }
  SECTION("metadata that is not strings") {
    write_raw(path, R"({"__metadata__":{"step":100}})", 0);
    REQUIRE_THROWS_WITH(SafetensorsReader(path), Contains(path) && Contains("step"));
  }
}

TEST_CASE("safetensors: read_into checks dtype and shape, info names a missing tensor", "[io]") {
  TempDir tmp;
  const float x[6] = {1, 2, 3, 4, 5, 6};
  const std::vector<TensorRef> tensors = {{"w", "F32", {2, 3}, x, sizeof x}};
  const std::string path = tmp / "w.safetensors";
  pg::io::write_safetensors(path, tensors);
  const SafetensorsReader r(path);
  float out[6];
  using Catch::Contains;
  REQUIRE_THROWS_WITH(r.read_into("w", out, "BF16", std::vector<int64_t>{2, 3}),
                      Contains(path) && Contains("'w'") && Contains("expected BF16 [2, 3]") &&
                          Contains("found F32 [2, 3]"));
  REQUIRE_THROWS_WITH(r.read_into("w", out, "F32", std::vector<int64_t>{3, 2}),
                      Contains(path) && Contains("expected F32 [3, 2], found F32 [2, 3]"));
  REQUIRE_THROWS_WITH(r.read_into("w", out, "F32", std::vector<int64_t>{6}), Contains(path));
  REQUIRE_THROWS_WITH(r.info("v"), Contains(path) && Contains("no tensor 'v'"));
  REQUIRE_THROWS_AS(r.read_bytes("v"), pg::UserError);
  REQUIRE_THROWS_AS(pg::io::dtype_size("F12"), pg::UserError);
  REQUIRE(pg::io::dtype_size("BF16") == 2);
}
