// Sweep files: grid and list expansion (order and counts), precedence of set/grid/list, run
// names, and one-line errors that name every kind of bad key.
#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "sweep/sweep_spec.hpp"

using namespace pg;
using nlohmann::ordered_json;

namespace {

Sweep parse(const char* text) { return parse_sweep(ordered_json::parse(text), "s.json"); }

std::vector<std::string> names(const Sweep& s) {
  std::vector<std::string> out;
  for (const auto& r : s.runs) out.push_back(r.name);
  return out;
}

// The error of parsing text: one line that contains every string of `want`.
void require_error(const char* text, std::vector<std::string> want) {
  std::string msg;
  try {
    parse(text);
  } catch (const UserError& e) {
    msg = e.what();
  }
  CAPTURE(text, msg);
  REQUIRE(!msg.empty());
  REQUIRE(msg.find('\n') == std::string::npos);
  REQUIRE_THAT(msg, Catch::StartsWith("s.json"));
  for (const auto& w : want) REQUIRE_THAT(msg, Catch::Contains(w));
}

}  // namespace

TEST_CASE("sweep: a grid expands to every combination, last key fastest, in file order", "[sweep]") {
  const Sweep s = parse(R"({"grid": {"optim.lr": [0.001, 0.002, 0.003], "model.n_layer": [1, 2]}})");
  REQUIRE(s.runs.size() == 6);
  REQUIRE(names(s) == std::vector<std::string>{"optim.lr=0.001,model.n_layer=1", "optim.lr=0.001,model.n_layer=2",
                                               "optim.lr=0.002,model.n_layer=1", "optim.lr=0.002,model.n_layer=2",
                                               "optim.lr=0.003,model.n_layer=1", "optim.lr=0.003,model.n_layer=2"});
  REQUIRE(s.runs[3].config.optim.lr == 0.002);
  REQUIRE(s.runs[3].config.model.n_layer == 2);
  REQUIRE(s.varying_keys == std::vector<std::string>{"optim.lr", "model.n_layer"});

  // The key order of the file decides the order, not the alphabet.
  const Sweep t = parse(R"({"grid": {"model.n_layer": [1, 2], "optim.lr": [0.001, 0.002]}})");
  REQUIRE(t.runs.front().name == "model.n_layer=1,optim.lr=0.001");
  REQUIRE(t.runs[1].name == "model.n_layer=1,optim.lr=0.002");
}

TEST_CASE("sweep: list entries run in order; grid x list is the product, grid outermost", "[sweep]") {
  const Sweep l = parse(R"({"list": [{"optim.lr": 0.01}, {"model.n_layer": 3, "optim.lr": 0.02}, {}]})");
  REQUIRE(names(l) == std::vector<std::string>{"optim.lr=0.01", "model.n_layer=3,optim.lr=0.02", "base"});
  REQUIRE(l.runs[1].config.model.n_layer == 3);
  REQUIRE(l.runs[2].config == default_config());

  const Sweep p = parse(R"({"grid": {"train.seed": [1, 2, 3]}, "list": [{"optim.kind": "adamw"}, {"optim.lr": 0.1}]})");
  REQUIRE(p.runs.size() == 6);
  REQUIRE(p.runs[0].name == "train.seed=1,optim.kind=adamw");
  REQUIRE(p.runs[1].name == "train.seed=1,optim.lr=0.1");
  REQUIRE(p.runs[5].name == "train.seed=3,optim.lr=0.1");
  REQUIRE(p.varying_keys == std::vector<std::string>{"train.seed", "optim.kind", "optim.lr"});
}

TEST_CASE("sweep: set applies to every run and a list entry overrides it", "[sweep]") {
  const Sweep s = parse(R"({"set": {"train.max_steps": 7, "optim.lr": 0.5},
                            "grid": {"model.n_layer": [1, 2]},
                            "list": [{}, {"optim.lr": 0.25}]})");
  REQUIRE(s.runs.size() == 4);
  for (const auto& r : s.runs) REQUIRE(r.config.train.max_steps == 7);
  REQUIRE(s.runs[0].config.optim.lr == 0.5);
  REQUIRE(s.runs[1].config.optim.lr == 0.25);
  REQUIRE(s.runs[0].name == "model.n_layer=1");  // set keys do not name runs
  REQUIRE(s.runs[1].name == "model.n_layer=1,optim.lr=0.25");

  const Sweep one = parse(R"({"set": {"train.max_steps": 3}})");
  REQUIRE(names(one) == std::vector<std::string>{"base"});
}

TEST_CASE("sweep: run names are readable, stable and safe as directory names", "[sweep]") {
  using nlohmann::json;
  REQUIRE(run_name({}) == "base");
  REQUIRE(run_name({{"optim.lr", json(3e-3)}, {"model.n_layer", json(2)}}) == "optim.lr=0.003,model.n_layer=2");
  REQUIRE(run_name({{"optim.eps", json(1e-8)}}) == "optim.eps=1e-08");
  REQUIRE(run_name({{"model.qk_norm", json(true)}, {"optim.kind", json("muon")}}) ==
          "model.qk_norm=true,optim.kind=muon");
  REQUIRE(run_name({{"data.train", json("../x/*.bin")}}) == "data.train=.._x__.bin");

  // Very long names are cut, end in a hash of the whole name, and stay distinct.
  const Sweep s = parse(R"({"list": [{"data.train": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"},
                                     {"data.train": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2"}]})");
  REQUIRE(s.runs[0].name.size() == 120);
  REQUIRE(s.runs[1].name.size() == 120);
  REQUIRE(s.runs[0].name != s.runs[1].name);
  REQUIRE(s.runs[0].name.find('~') == 120 - 17);

  // The same file gives the same names every time (a restarted sweep finds its runs).
  const char* text = R"({"grid": {"optim.lr": [0.001, 0.01]}, "list": [{"model.pos": "rope"}]})";
  REQUIRE(names(parse(text)) == names(parse(text)));
}

TEST_CASE("sweep: unknown and conflicting keys are one-line errors naming the key", "[sweep]") {
  require_error(R"({"grids": {"optim.lr": [1]}})", {"unknown sweep key 'grids'"});
  require_error(R"({"grid": {"optim.lrr": [0.1]}})", {"optim.lrr", "did you mean 'optim.lr'"});
  require_error(R"({"set": {"model.n_layers": 2}})", {"set", "model.n_layers"});
  require_error(R"({"list": [{}, {"train.stepz": 2}]})", {"list[1]", "train.stepz"});
  require_error(R"({"grid": {"optim": [1]}})", {"'optim' is a config section"});
  require_error(R"({"grid": {"optim.lr": []}})", {"grid.optim.lr", "non-empty array"});
  require_error(R"({"grid": {"optim.lr": [[1]]}})", {"grid.optim.lr", "expected a number, string or boolean"});
  require_error(R"({"grid": {"optim.lr": ["fast"]}})", {"optim.lr", "expected a number > 0", "fast"});
  require_error(R"({"set": {"optim.lr": 0.1}, "grid": {"optim.lr": [0.2]}})", {"'optim.lr' is in both set and grid"});
  require_error(R"({"grid": {"optim.lr": [0.2]}, "list": [{"optim.lr": 0.1}]})", {"'optim.lr' is in both grid and list[0]"});
  require_error(R"({"list": [{"optim.lr": 0.1}, {"optim.lr": 0.1}]})", {"two runs have the same name 'optim.lr=0.1'"});
  require_error(R"({"base": "no/such/config.json"})", {"base", "no/such/config.json"});
  require_error(R"({"grid": {"model.d_model": [30]}, "set": {"model.n_head": 4}})", {"model.d_model", "divisible"});
  require_error(R"([1, 2])", {"expected a JSON object"});
}
