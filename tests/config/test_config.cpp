#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <unistd.h>

#include "config/config.hpp"
#include "core/error.hpp"

using nlohmann::json;

namespace {

// The UserError message `f` throws; fails the test when it throws nothing or something else.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const pg::UserError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find('\n') == std::string::npos);  // every user error is one line
    return msg;
  }
  FAIL("expected a pg::UserError");
  return "";
}

std::string load_error(const json& j) {
  return error_of([&] { pg::from_json(j, "configs/x.json"); });
}

std::string set_error(const std::string& assignment) {
  return error_of([&] {
    pg::Config cfg;
    pg::apply_override(cfg, assignment);
  });
}

// A file under the temp directory, removed at scope exit.
struct TempFile {
  std::filesystem::path path;
  TempFile(const std::string& name, const std::string& text)
      : path(std::filesystem::temp_directory_path() /
             ("polargpt_test_" + std::to_string(getpid()) + "_" + name)) {
    std::ofstream(path) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

// "model.n_layer" for every leaf of a nested object.
void flatten(const json& j, const std::string& prefix, std::vector<std::string>& out) {
  for (const auto& [k, v] : j.items()) {
    const std::string key = prefix.empty() ? k : prefix + "." + k;
    if (v.is_object()) flatten(v, key, out);
    else out.push_back(key);
  }
}

// A valid value for every field that differs from its default, as --set text.
std::string changed_value(const pg::FieldInfo& f) {
  const json& d = f.default_value;
  if (f.type == "bool") return d.get<bool>() ? "false" : "true";
  if (f.type == "int") return std::to_string(d.get<int>() + 1);
  if (f.type == "uint64") return std::to_string(d.get<uint64_t>() + 1);
  if (f.type == "float") return d.get<double>() == 0 ? "0.5" : json(d.get<double>() * 0.5).dump();
  if (f.type == "enum") return f.choices.back() != d.get<std::string>() ? f.choices.back() : f.choices.front();
  return d.get<std::string>() + "_x";
}

}  // namespace

TEST_CASE("config: the defaults validate and equal default_config()", "[config]") {
  REQUIRE_NOTHROW(pg::validate(pg::Config{}));
  REQUIRE(pg::default_config() == pg::Config{});
  REQUIRE(pg::Config{}.d_ff() == 4 * pg::Config{}.model.d_model);
}

TEST_CASE("config: to_json -> from_json round-trips every field", "[config]") {
  const pg::Config defaults;
  REQUIRE(pg::from_json(pg::to_json(defaults), "t") == defaults);

  // Change every field through its --set key, so a new table row is covered without editing this.
  pg::Config cfg;
  for (const pg::FieldInfo& f : pg::config_fields()) {
    const std::string assignment = f.key + "=" + changed_value(f);
    INFO(assignment);
    pg::apply_override(cfg, assignment);
  }
  const json j = pg::to_json(cfg);
  const pg::Config back = pg::from_json(j, "t");
  REQUIRE(back == cfg);
  REQUIRE(pg::to_json(back) == j);
  for (const pg::FieldInfo& f : pg::config_fields()) {
    INFO(f.key);
    CHECK(j[json::json_pointer("/" + std::string(f.key).replace(f.key.find('.'), 1, "/"))] !=
          f.default_value);
  }
}

TEST_CASE("config: to_json lists exactly the table's keys; describe_markdown mentions each", "[config]") {
  std::vector<std::string> keys;
  flatten(pg::to_json(pg::default_config()), "", keys);
  REQUIRE(keys.size() == pg::config_fields().size());
  const std::string md = pg::describe_markdown();
  REQUIRE(md.starts_with("| key | type | default | description |\n"));
  for (const std::string& k : keys) {
    INFO(k);
    CHECK(md.find("| `" + k + "` |") != std::string::npos);
  }
  CHECK(md.find("One of: `layernorm`, `rmsnorm`, `none`.") != std::string::npos);
  CHECK(md.find("Must be in [0, 1).") != std::string::npos);
  // One table row per field plus header and separator, each a well-formed row.
  CHECK(std::count(md.begin(), md.end(), '\n') == static_cast<long>(keys.size()) + 2);
}

TEST_CASE("config: unknown keys and sections name the path and suggest the closest", "[config]") {
  CHECK(load_error({{"model", {{"n_layers", 4}}}}) ==
        "configs/x.json: unknown key 'model.n_layers' (did you mean 'model.n_layer'?)");
  CHECK(load_error({{"modle", json::object()}}) ==
        "configs/x.json: unknown section 'modle' (did you mean 'model'?)");
  CHECK(load_error({{"train", {{"lr", 0.1}}}}) ==
        "configs/x.json: unknown key 'train.lr' (did you mean 'optim.lr'?)");
  CHECK(load_error({{"quux", {{"x", 1}}}}) == "configs/x.json: unknown section 'quux'");
  CHECK(load_error({{"spectral", {{"x", 1}}}}) == "configs/x.json: unknown key 'spectral.x'");
  CHECK(load_error({{"model", {{"qqqqqqqq", 1}}}}) == "configs/x.json: unknown key 'model.qqqqqqqq'");
  CHECK(load_error({{"model", 4}}) ==
        "configs/x.json: model: expected an object (a config section), got 4");
  CHECK(load_error(json::array({1, 2})) ==
        "configs/x.json: expected a JSON object at the top level, got [1,2]");
}

TEST_CASE("config: \"$comment\" and \"description\" at the top level are ignored", "[config]") {
  const json j = {{"$comment", "a note"}, {"description", "tiny run"}, {"model", {{"n_layer", 2}}}};
  REQUIRE(pg::from_json(j, "t").model.n_layer == 2);
  CHECK(load_error({{"description", 3}}) == "configs/x.json: description: expected a string, got 3");
  CHECK(load_error({{"model", {{"$comment", "x"}}}}).find("unknown key 'model.$comment'") !=
        std::string::npos);
}

TEST_CASE("config: wrong JSON types are refused with the key and the expected type", "[config]") {
  CHECK(load_error({{"model", {{"n_layer", "four"}}}}) ==
        "configs/x.json: model.n_layer: expected an integer >= 1, got \"four\"");
  CHECK(load_error({{"model", {{"n_layer", 4.5}}}}).find("model.n_layer: expected an integer") !=
        std::string::npos);
  CHECK(load_error({{"model", {{"n_layer", true}}}}).find("got true") != std::string::npos);
  CHECK(load_error({{"model", {{"n_layer", nullptr}}}}).find("got null") != std::string::npos);
  CHECK(load_error({{"model", {{"n_layer", 3000000000LL}}}}) ==
        "configs/x.json: model.n_layer: expected a 32-bit integer, got 3000000000");
  CHECK(load_error({{"model", {{"n_layer", 1e30}}}}).find("32-bit integer") != std::string::npos);
  CHECK(load_error({{"model", {{"bias", 1}}}}) ==
        "configs/x.json: model.bias: expected true or false, got 1");
  CHECK(load_error({{"optim", {{"lr", "3e-4"}}}}) ==
        "configs/x.json: optim.lr: expected a number > 0, got \"3e-4\"");
  CHECK(load_error({{"data", {{"train", 5}}}}) ==
        "configs/x.json: data.train: expected a non-empty string, got 5");
  CHECK(load_error({{"data", {{"train", ""}}}}) ==
        "configs/x.json: data.train: expected a non-empty string, got \"\"");
  CHECK(load_error({{"train", {{"seed", -1}}}}) ==
        "configs/x.json: train.seed: expected a non-negative integer, got -1");
  CHECK(load_error({{"model", {{"n_layer", json::array({1, 2, 3})}}}}).find("got [1,2,3]") !=
        std::string::npos);

  // Integral floats count as integers; the full uint64 range is a seed.
  REQUIRE(pg::from_json({{"model", {{"n_layer", 4.0}}}}, "t").model.n_layer == 4);
  REQUIRE(pg::from_json({{"train", {{"max_steps", 1e3}}}}, "t").train.max_steps == 1000);
  REQUIRE(pg::from_json({{"train", {{"seed", UINT64_MAX}}}}, "t").train.seed == UINT64_MAX);
  // Integers are numbers.
  REQUIRE(pg::from_json({{"optim", {{"lr", 1}}}}, "t").optim.lr == 1.0);
}

TEST_CASE("config: values out of range or outside an enum are refused", "[config]") {
  CHECK(load_error({{"optim", {{"lr", -1}}}}) == "configs/x.json: optim.lr: expected a number > 0, got -1");
  CHECK(load_error({{"optim", {{"lr", 0}}}}).find("optim.lr: expected a number > 0") != std::string::npos);
  CHECK(load_error({{"optim", {{"beta2", 1.0}}}}) ==
        "configs/x.json: optim.beta2: expected a number in [0, 1), got 1.0");
  CHECK(load_error({{"optim", {{"min_lr_ratio", 1.5}}}}).find("in [0, 1]") != std::string::npos);
  CHECK(load_error({{"model", {{"n_head", 0}}}}) ==
        "configs/x.json: model.n_head: expected an integer >= 1, got 0");
  CHECK(load_error({{"train", {{"eval_every", -1}}}}).find("train.eval_every: expected an integer >= 0") !=
        std::string::npos);
  CHECK(load_error({{"model", {{"norm", "batchnorm"}}}}) ==
        "configs/x.json: model.norm: expected one of layernorm|rmsnorm|none, got \"batchnorm\"");
  CHECK(load_error({{"model", {{"norm", 3}}}}).find("expected one of layernorm|rmsnorm|none, got 3") !=
        std::string::npos);

  // The edges that are allowed.
  REQUIRE(pg::from_json({{"optim", {{"beta1", 0}}}}, "t").optim.beta1 == 0.0);
  REQUIRE(pg::from_json({{"optim", {{"min_lr_ratio", 1}}}}, "t").optim.min_lr_ratio == 1.0);
  REQUIRE(pg::from_json({{"model", {{"d_ff", 0}}}}, "t").model.d_ff == 0);
  REQUIRE(pg::from_json({{"model", {{"norm", "rmsnorm"}}}}, "t").model.norm == "rmsnorm");
}

TEST_CASE("config: --set parses the value by the field's type", "[config]") {
  pg::Config cfg;
  pg::apply_override(cfg, "model.n_layer=6");
  pg::apply_override(cfg, "train.seed=18446744073709551615");
  pg::apply_override(cfg, "optim.lr=3e-4");
  pg::apply_override(cfg, "optim.weight_decay=0");
  pg::apply_override(cfg, "model.bias=false");
  pg::apply_override(cfg, "model.qk_norm=true");
  pg::apply_override(cfg, "model.norm=rmsnorm");
  pg::apply_override(cfg, "data.train=/tmp/a b/*.bin");   // strings are raw
  pg::apply_override(cfg, "data.val=\"x=y.bin\"");        // or JSON-quoted
  pg::apply_override(cfg, " train.max_steps =1e3");
  CHECK(cfg.model.n_layer == 6);
  CHECK(cfg.train.seed == UINT64_MAX);
  CHECK(cfg.optim.lr == 3e-4);
  CHECK(cfg.optim.weight_decay == 0.0);
  CHECK(!cfg.model.bias);
  CHECK(cfg.model.qk_norm);
  CHECK(cfg.model.norm == "rmsnorm");
  CHECK(cfg.data.train == "/tmp/a b/*.bin");
  CHECK(cfg.data.val == "x=y.bin");
  CHECK(cfg.train.max_steps == 1000);

  // Later overrides win.
  REQUIRE(pg::default_config({"model.n_layer=2", "model.n_layer=3"}).model.n_layer == 3);
}

TEST_CASE("config: malformed, unknown and ill-typed --set values are refused", "[config]") {
  CHECK(set_error("model.n_layer") == "--set: expected key.path=value, got \"model.n_layer\"");
  CHECK(set_error("=4") == "--set: expected key.path=value, got \"=4\"");
  CHECK(set_error("model.n_layers=4") ==
        "--set: unknown key 'model.n_layers' (did you mean 'model.n_layer'?)");
  CHECK(set_error("n_layer=4") == "--set: unknown key 'n_layer' (did you mean 'model.n_layer'?)");
  CHECK(set_error("model=4").find("'model' is a section") != std::string::npos);
  CHECK(set_error("model.n_layer=four") == "--set: model.n_layer: expected an integer >= 1, got \"four\"");
  CHECK(set_error("model.n_layer=4.5").find("model.n_layer: expected an integer") != std::string::npos);
  CHECK(set_error("model.n_layer=").find("got \"\"") != std::string::npos);
  CHECK(set_error("model.n_layer=0") == "--set: model.n_layer: expected an integer >= 1, got 0");
  CHECK(set_error("model.bias=yes") == "--set: model.bias: expected true or false, got \"yes\"");
  CHECK(set_error("model.bias=1") == "--set: model.bias: expected true or false, got \"1\"");
  CHECK(set_error("optim.lr=nan").find("optim.lr: expected a number > 0") != std::string::npos);
  CHECK(set_error("optim.lr=-1") == "--set: optim.lr: expected a number > 0, got -1");
  CHECK(set_error("train.seed=-1").find("train.seed: expected a non-negative integer") != std::string::npos);
  CHECK(set_error("train.peak_tflops=-1") == "--set: train.peak_tflops: expected a number >= 0, got -1");
  CHECK(pg::default_config({"train.peak_tflops=989.4"}).train.peak_tflops == 989.4);
  CHECK(set_error("model.norm=batchnorm") ==
        "--set: model.norm: expected one of layernorm|rmsnorm|none, got \"batchnorm\"");
  CHECK(set_error("data.train=").find("data.train: expected a non-empty string") != std::string::npos);
  CHECK(set_error("model.n_layer=4\n5").find("--set: model.n_layer") == 0);
}

TEST_CASE("config: cross-field constraints name the keys involved", "[config]") {
  const std::string divisible = error_of([] { pg::default_config({"model.d_model=130"}); });
  CHECK(divisible == "--set: model.d_model (130) must be divisible by model.n_head (4)");

  const std::string rope = error_of([] {
    pg::default_config({"model.pos=rope", "model.d_model=60", "model.n_head=4"});  // d_head 15
  });
  CHECK(rope.find("model.pos = rope needs an even head size") != std::string::npos);
  CHECK(rope.find("model.d_model / model.n_head = 15") != std::string::npos);
  REQUIRE_NOTHROW(pg::default_config({"model.pos=rope"}));  // d_head 32

  const std::string tokens = error_of([] {
    pg::default_config({"train.batch_size=100000", "model.seq_len=100000"});
  });
  CHECK(tokens.find("train.batch_size * model.seq_len") != std::string::npos);

  // validate() re-checks per-field ranges of a config built in code.
  pg::Config cfg;
  cfg.train.grad_accum = 0;
  CHECK(error_of([&] { pg::validate(cfg, "code"); }) ==
        "code: train.grad_accum: expected an integer >= 1, got 0");
  cfg = pg::Config{};
  cfg.model.activation = "swish";
  CHECK(error_of([&] { pg::validate(cfg); }).find("model.activation: expected one of gelu|relu2") !=
        std::string::npos);

  // Warm-up longer than the run is allowed.
  REQUIRE_NOTHROW(pg::default_config({"optim.warmup_steps=1000", "train.max_steps=10"}));
}

TEST_CASE("config: load_config reads a file, keeps omitted defaults, then applies --set", "[config]") {
  TempFile file("subset.json", R"({
    "$comment": "a small run",
    "model": {"n_layer": 2, "norm": "rmsnorm"},
    "optim": {"lr": 0.01}
  })");
  const pg::Config cfg = pg::load_config(file.path.string());
  pg::Config expect;
  expect.model.n_layer = 2;
  expect.model.norm = "rmsnorm";
  expect.optim.lr = 0.01;
  REQUIRE(cfg == expect);

  const pg::Config over = pg::load_config(file.path.string(), {"model.n_layer=8", "train.seed=7"});
  CHECK(over.model.n_layer == 8);
  CHECK(over.model.norm == "rmsnorm");
  CHECK(over.train.seed == 7);

  // A cross-field failure of the file names the file; the override fixes it.
  TempFile bad("cross.json", R"({"model": {"d_model": 130}})");
  CHECK(error_of([&] { pg::load_config(bad.path.string()); }) ==
        bad.path.string() + ": model.d_model (130) must be divisible by model.n_head (4)");
  REQUIRE(pg::load_config(bad.path.string(), {"model.n_head=5"}).d_head() == 26);
}

TEST_CASE("config: missing, unreadable and malformed files are one-line errors", "[config]") {
  const std::string missing = "/nonexistent/polargpt/x.json";
  CHECK(error_of([&] { pg::load_config(missing); }) == missing + ": no such config file");

  const std::string dir = std::filesystem::temp_directory_path().string();
  CHECK(error_of([&] { pg::load_config(dir); }).find("is a directory") != std::string::npos);

  TempFile broken("broken.json", "{\n  \"model\": {\"n_layer\": 4,}\n}\n");
  const std::string parse = error_of([&] { pg::load_config(broken.path.string()); });
  CHECK(parse.starts_with(broken.path.string() + ": invalid JSON: "));
  CHECK(parse.find("line 2, column") != std::string::npos);

  TempFile empty("empty.json", "");
  CHECK(error_of([&] { pg::load_config(empty.path.string()); }).find("invalid JSON") != std::string::npos);

  TempFile array("array.json", "[1, 2]");
  CHECK(error_of([&] { pg::load_config(array.path.string()); }) ==
        array.path.string() + ": expected a JSON object at the top level, got [1,2]");

  if (geteuid() != 0) {  // root reads anything
    TempFile locked("locked.json", "{}");
    std::filesystem::permissions(locked.path, std::filesystem::perms::none);
    CHECK(error_of([&] { pg::load_config(locked.path.string()); }).find("cannot open config file") !=
          std::string::npos);
  }
}

TEST_CASE("config: config_fields lists every key once with its type", "[config]") {
  const auto fields = pg::config_fields();
  std::set<std::string> keys;
  for (const pg::FieldInfo& f : fields) {
    INFO(f.key);
    CHECK(keys.insert(f.key).second);
    CHECK(!f.description.empty());
    CHECK((f.type == "enum") == !f.choices.empty());
    if (f.type == "enum")
      CHECK(std::find(f.choices.begin(), f.choices.end(), f.default_value.get<std::string>()) !=
            f.choices.end());
  }
  const auto n_layer = std::find_if(fields.begin(), fields.end(), [](auto& f) { return f.key == "model.n_layer"; });
  REQUIRE(n_layer != fields.end());
  CHECK(n_layer->type == "int");
  CHECK(n_layer->range == ">= 1");
  CHECK(n_layer->default_value == 4);
}
