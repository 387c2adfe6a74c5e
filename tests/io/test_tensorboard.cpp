// CRC-32C against published check values, the exact bytes of an Event, and event files read back
// by an independent decoder written here: record framing, both CRCs, the header record, and every
// step's tags and values, including a trainer run with train.tensorboard on.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/synthetic_data.hpp"
#include "common/temp_dir.hpp"
#include "config/config.hpp"
#include "io/crc32c.hpp"
#include "io/metrics_log.hpp"
#include "io/tensorboard.hpp"
#include "train/trainer.hpp"

using namespace pg;
namespace fs = std::filesystem;

namespace {

// ---- an independent reader: a bitwise CRC-32C and a generic protobuf field walker ------------

uint32_t crc32c_bitwise(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}
uint32_t masked(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xA282EAD8u; }

uint64_t le(const std::string& s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(s.at(pos + size_t(i)))) << (8 * i);
  return v;
}

struct Field {
  uint32_t number, wire;
  uint64_t varint_or_fixed = 0;
  std::string bytes;
};

std::vector<Field> fields(const std::string& m) {
  std::vector<Field> out;
  size_t p = 0;
  auto varint = [&] {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      const uint8_t b = uint8_t(m.at(p++));
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (p < m.size()) {
    const uint64_t key = varint();
    Field f{uint32_t(key >> 3), uint32_t(key & 7)};
    if (f.wire == 0) f.varint_or_fixed = varint();
    else if (f.wire == 1) f.varint_or_fixed = le(m, p, 8), p += 8;
    else if (f.wire == 5) f.varint_or_fixed = le(m, p, 4), p += 4;
    else if (f.wire == 2) {
      const size_t n = size_t(varint());
      f.bytes = m.substr(p, n);
      REQUIRE(f.bytes.size() == n);
      p += n;
    } else FAIL("unexpected wire type " << f.wire);
    out.push_back(f);
  }
  return out;
}

struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::map<std::string, float> values;
};

Event decode_event(const std::string& data) {
  Event e;
  for (const Field& f : fields(data)) {
    if (f.number == 1 && f.wire == 1) std::memcpy(&e.wall_time, &f.varint_or_fixed, 8);
    else if (f.number == 2 && f.wire == 0) e.step = int64_t(f.varint_or_fixed);
    else if (f.number == 3 && f.wire == 2) e.file_version = f.bytes;
    else if (f.number == 5 && f.wire == 2) {
      for (const Field& v : fields(f.bytes)) {
        REQUIRE(v.number == 1);
        std::string tag;
        float x = 0;
        bool has_value = false;
        for (const Field& vf : fields(v.bytes)) {
          if (vf.number == 1 && vf.wire == 2) tag = vf.bytes;
          if (vf.number == 2 && vf.wire == 5) {
            const uint32_t bits = uint32_t(vf.varint_or_fixed);
            std::memcpy(&x, &bits, 4);
            has_value = true;
          }
        }
        REQUIRE(has_value);
        e.values[tag] = x;
      }
    } else FAIL("unexpected Event field " << f.number);
  }
  return e;
}

// Every record of an event file, with both CRCs checked and nothing left over.
std::vector<Event> read_events(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string s = ss.str();
  std::vector<Event> out;
  size_t p = 0;
  while (p < s.size()) {
    REQUIRE(p + 12 <= s.size());
    const uint64_t n = le(s, p, 8);
    REQUIRE(uint32_t(le(s, p + 8, 4)) == masked(crc32c_bitwise(s.substr(p, 8))));
    REQUIRE(p + 12 + n + 4 <= s.size());
    const std::string data = s.substr(p + 12, size_t(n));
    REQUIRE(uint32_t(le(s, p + 12 + size_t(n), 4)) == masked(crc32c_bitwise(data)));
    out.push_back(decode_event(data));
    p += 12 + size_t(n) + 4;
  }
  return out;
}

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().starts_with("events.out.tfevents.")) out.push_back(e.path().string());
  return out;
}

}  // namespace

TEST_CASE("crc32c: published check values", "[sweep]") {
  REQUIRE(io::crc32c("123456789") == 0xE3069283u);
  REQUIRE(io::crc32c("") == 0u);
  REQUIRE(io::crc32c("a") == 0xC1D04330u);
  REQUIRE(io::crc32c(std::string(32, '\0')) == 0x8A9136AAu);  // iSCSI (RFC 3720) vectors
  REQUIRE(io::crc32c(std::string(32, '\xFF')) == 0x62A8AB43u);
  std::string up, down;
  for (int i = 0; i < 32; ++i) up.push_back(char(i)), down.push_back(char(31 - i));
  REQUIRE(io::crc32c(up) == 0x46DD794Eu);
  REQUIRE(io::crc32c(down) == 0x113FDB5Cu);
  // Extending is the same as one pass; the table version matches the bitwise one.
  const std::string text = "The quick brown fox jumps over the lazy dog";
  REQUIRE(io::crc32c_extend(io::crc32c(text.substr(0, 10)), text.data() + 10, text.size() - 10) == io::crc32c(text));
  REQUIRE(io::crc32c(text) == crc32c_bitwise(text));
  REQUIRE(io::mask_crc32c(0) == 0xA282EAD8u);
  REQUIRE(io::mask_crc32c(0x00008000u) == 0xA282EAD9u);  // bit 15 rotates to bit 0
}

TEST_CASE("tensorboard: an Event's bytes follow the protobuf wire format", "[sweep]") {
  // wall_time 1.0 (field 1, fixed64), step 300 (field 2, varint 0xAC 0x02), summary (field 5)
  // holding one Value {tag "a" (field 1), simple_value 1.0f (field 2, fixed32)}.
  const std::string e = io::encode_scalar_event(1.0, 300, {{"a", 1.0f}});
  const std::string want("\x09\x00\x00\x00\x00\x00\x00\xF0\x3F"
                         "\x10\xAC\x02"
                         "\x2A\x0A"
                         "\x0A\x08"
                         "\x0A\x01"
                         "a"
                         "\x15\x00\x00\x80\x3F",
                         9 + 3 + 2 + 2 + 2 + 1 + 5);
  REQUIRE(e == want);
  const std::string h = io::encode_file_version_event(2.0);
  REQUIRE(h.substr(9) == std::string("\x1A\x0D") + "brain.Event:2");

  const std::string r = io::frame_record("abc");
  REQUIRE(r.size() == 8 + 4 + 3 + 4);
  REQUIRE(le(r, 0, 8) == 3);
  REQUIRE(uint32_t(le(r, 8, 4)) == masked(crc32c_bitwise(r.substr(0, 8))));
  REQUIRE(uint32_t(le(r, 15, 4)) == masked(crc32c_bitwise("abc")));
}

TEST_CASE("tensorboard: metrics records flatten to scalars generically", "[sweep]") {
  const auto rec = nlohmann::json::parse(
      R"({"step": 5, "train_loss": 2.5, "mfu": 0.4, "note": "x", "ok": true, "val_loss": null,
          "sigma_max": {"h.0.attn.q.weight": 1.5}, "expert_load": [0.25, 0.75]})");
  const auto s = io::scalars_of(rec);
  std::map<std::string, float> m(s.begin(), s.end());
  REQUIRE(m == std::map<std::string, float>{{"train_loss", 2.5f},
                                            {"mfu", 0.4f},
                                            {"sigma_max/h.0.attn.q.weight", 1.5f},
                                            {"expert_load/0", 0.25f},
                                            {"expert_load/1", 0.75f}});
  // A per-matrix line (spectral.jsonl style) is tagged by its name.
  const auto line = io::scalars_of(nlohmann::json::parse(R"({"step": 5, "name": "wte", "sigma_max": 3.0})"));
  REQUIRE(line == std::vector<io::Scalar>{{"sigma_max/wte", 3.0f}});
  // One slice of a 3-D tensor (an expert's matrix) gets a tag of its own.
  const auto sl = io::scalars_of(
      nlohmann::json::parse(R"({"step": 5, "name": "h.0.moe.experts.fc.weight", "slice": 3, "sigma_max": 2.0})"));
  REQUIRE(sl == std::vector<io::Scalar>{{"sigma_max/h.0.moe.experts.fc.weight/3", 2.0f}});
}

TEST_CASE("tensorboard: a metrics log round-trips through its event file, and resume rebuilds it", "[sweep]") {
  test::TempDir d("tb");
  {
    io::MetricsLog log(d.str(), "metrics", false, true);
    log.write({{"step", 1}, {"train_loss", 3.25}, {"lr", 1e-3}});
    log.write({{"step", 200}, {"train_loss", 2.0}, {"val_loss", 2.5}, {"sigma_max", {{"wte", 7.0}}}});
    log.write({{"step", 300}, {"train_loss", 1.5}});
  }
  auto files = event_files(d.str());
  REQUIRE(files.size() == 1);
  auto ev = read_events(files[0]);
  REQUIRE(ev.size() == 4);
  REQUIRE(ev[0].file_version == "brain.Event:2");
  REQUIRE(ev[0].values.empty());
  REQUIRE(ev[1].step == 1);
  REQUIRE(ev[1].values == std::map<std::string, float>{{"train_loss", 3.25f}, {"lr", 1e-3f}});
  REQUIRE(ev[2].step == 200);
  REQUIRE(ev[2].values == std::map<std::string, float>{{"train_loss", 2.0f}, {"val_loss", 2.5f}, {"sigma_max/wte", 7.0f}});
  REQUIRE(ev[3].step == 300);
  const double now = double(std::time(nullptr));
  REQUIRE(std::abs(ev[1].wall_time - now) < 600);

  // Resume: the JSONL is cut back to step 200 (as the trainer does), the event file rebuilt from it.
  io::truncate_jsonl_after_step(d / "metrics.jsonl", 200);
  {
    io::MetricsLog log(d.str(), "metrics", true, true);
    log.write({{"step", 250}, {"train_loss", 1.75}});
  }
  files = event_files(d.str());
  REQUIRE(files.size() == 1);
  ev = read_events(files[0]);
  REQUIRE(ev.size() == 4);
  REQUIRE(ev[1].step == 1);
  REQUIRE(ev[2].step == 200);
  REQUIRE(ev[3].step == 250);
  REQUIRE(ev[3].values.at("train_loss") == 1.75f);
}

TEST_CASE("tensorboard: a training run with train.tensorboard writes the trainer's scalars", "[sweep]") {
  test::TempDir data("tbdata"), run("tbrun");
  test::write_markov_shards(data.str(), 32, 4000, 1000, 3);
  const Config cfg = default_config(
      {"model.n_layer=1", "model.n_head=2", "model.d_model=16", "model.vocab_size=32", "model.seq_len=8",
       "train.batch_size=2", "train.max_steps=4", "train.eval_every=2", "train.eval_batches=1", "train.log_every=1",
       "train.threads=1", "train.tensorboard=true", "data.train=" + data / "syn_train_*.bin",
       "data.val=" + data / "syn_val_*.bin"});
  train(cfg, {run.str(), false, {}});
  const auto files = event_files(run.str());
  REQUIRE(files.size() == 1);
  const auto ev = read_events(files[0]);
  const auto recs = io::read_jsonl(run / "metrics.jsonl");
  REQUIRE(ev.size() == recs.size() + 1);
  for (size_t i = 0; i < recs.size(); ++i) {
    REQUIRE(ev[i + 1].step == recs[i].at("step").get<int64_t>());
    for (const char* k : {"train_loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"})
      REQUIRE(ev[i + 1].values.at(k) == float(recs[i].at(k).get<double>()));
  }
  REQUIRE(ev[2].values.at("val_loss") == float(recs[1].at("val_loss").get<double>()));
  REQUIRE(ev[2].values.count("val_acc") == 1);

  // Off by default: no event file.
  test::TempDir run2("tbrun2");
  Config off = cfg;
  off.train.tensorboard = false;
  train(off, {run2.str(), false, {}});
  REQUIRE(event_files(run2.str()).empty());
}

// The scalars the issue lists beyond the basic ones: MFU (with a peak given), expert load (MoE),
// and per-matrix sigma_max from the spectral monitor, which has its own event file beside the
// metrics one (stem "spectral"), one event per spectral.jsonl line tagged sigma_max/<name> (and
// /<slice> for each expert's matrix of a 3-D tensor).
TEST_CASE("tensorboard: mfu, expert load and the monitor's per-matrix sigma_max reach event files", "[sweep]") {
  test::TempDir data("tbdata"), run("tbrun");
  test::write_markov_shards(data.str(), 32, 4000, 1000, 5);
  const Config cfg = default_config(
      {"model.variant=moe", "moe.n_expert=4", "moe.top_k=2", "moe.d_ff_expert=16", "model.n_layer=1",
       "model.n_head=2", "model.d_model=16", "model.vocab_size=32", "model.seq_len=8", "train.batch_size=2",
       "train.max_steps=4", "train.eval_every=2", "train.eval_batches=1", "train.log_every=1", "train.threads=1",
       "train.tensorboard=true", "train.peak_tflops=0.001", "spectral.monitor_every=2",
       "spectral.monitor_filter=h.*", "data.train=" + data / "syn_train_*.bin", "data.val=" + data / "syn_val_*.bin"});
  train(cfg, {run.str(), false, {}});
  const auto files = event_files(run.str());
  REQUIRE(files.size() == 2);
  const std::string metrics_file = files[0].ends_with(".metrics") ? files[0] : files[1];
  const std::string spectral_file = files[0].ends_with(".spectral") ? files[0] : files[1];
  REQUIRE(metrics_file.ends_with(".metrics"));
  REQUIRE(spectral_file.ends_with(".spectral"));

  const auto ev = read_events(metrics_file);
  const auto recs = io::read_jsonl(run / "metrics.jsonl");
  REQUIRE(ev.size() == recs.size() + 1);
  const auto& last = recs.back();
  REQUIRE(last.contains("mfu"));
  CHECK(ev.back().values.at("mfu") == float(last.at("mfu").get<double>()));
  REQUIRE(last.at("expert_load").size() == 1);  // one MoE block, 4 experts
  for (int e = 0; e < 4; ++e)
    CHECK(ev.back().values.at("expert_load/0/" + std::to_string(e)) ==
          float(last.at("expert_load").at(0).at(size_t(e)).get<double>()));

  const auto sev = read_events(spectral_file);
  const auto lines = io::read_jsonl(run / "spectral.jsonl");
  REQUIRE(!lines.empty());
  REQUIRE(sev.size() == lines.size() + 1);
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string tag = "sigma_max/" + lines[i].at("name").get<std::string>();
    if (lines[i].contains("slice")) tag += "/" + std::to_string(lines[i].at("slice").get<int64_t>());  // experts
    CAPTURE(tag);
    CHECK(sev[i + 1].step == lines[i].at("step").get<int64_t>());
    CHECK(sev[i + 1].values.at(tag) == float(lines[i].at("sigma_max").get<double>()));
  }
}
