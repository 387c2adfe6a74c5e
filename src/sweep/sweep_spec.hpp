// A sweep file and the runs it expands to.
//
//   {
//     "description": "free text (optional)",
//     "base": "configs/tiny.json",                      // optional; defaults when left out
//     "set":  {"train.max_steps": 60},                  // fixed overrides of every run
//     "grid": {"optim.lr": [0.001, 0.003],              // every combination of these values
//              "model.n_layer": [2, 4]},
//     "list": [{"optim.kind": "adamw"},                 // and/or these override sets
//              {"optim.kind": "muon", "optim.lr": 0.02}]
//   }
//
// Keys are config key paths as in `--set`; values are JSON scalars of the field's type. Runs are
// the product grid x list: grid points in the order of nested loops over the grid's keys as
// written (the last key varies fastest), and for each point every list entry in order (a sweep
// with no list has one empty entry; with no grid, one empty point). Precedence: base < set < grid
// < list; a key may not be in both set and grid, or in both grid and a list entry (the runs would
// silently collapse).
//
// A run's name is its varying overrides (the grid keys in file order, then the list entry's keys
// in its order) as key=value joined by ',': "optim.lr=0.003,model.n_layer=2". Numbers are written
// as the shortest text that reads back as the same value, strings without quotes; characters other
// than letters, digits and . _ = , + - become '_'; a name over 120 characters is cut and ends with
// a hash of the whole; a run with no varying override is "base". Two runs with one name are an error.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.hpp"

namespace pg {

using Override = std::pair<std::string, nlohmann::json>;  // (key path, value)

struct SweepRun {
  std::string name;                  // directory name in the sweep dir
  std::vector<Override> varying;     // the grid and list overrides that name it
  Config config;                     // base + set + varying, validated
};

struct Sweep {
  std::string file;                  // the sweep file, for messages
  std::string base;                  // base config path ("" = defaults)
  std::vector<Override> set;
  std::vector<std::pair<std::string, std::vector<nlohmann::json>>> grid;
  std::vector<std::vector<Override>> list;
  std::vector<SweepRun> runs;        // expanded, in run order
  std::vector<std::string> varying_keys;  // every key some run varies, grid keys first
};

// Reads, validates and expands a sweep file. Every key of the sweep file and every config key
// path and value is checked, and every run's config resolved, before anything runs: a problem is
// a pg::UserError of one line naming the file and the key.
Sweep load_sweep(const std::string& path);
// The same from JSON already parsed (tests); `origin` names it in errors.
Sweep parse_sweep(const nlohmann::ordered_json& j, const std::string& origin);

// The directory name of a run with these varying overrides (rules above, without the length cut).
std::string run_name(const std::vector<Override>& varying);
// A value as it appears in a run name and in the summary: 0.003, 2, adamw, true.
std::string value_text(const nlohmann::json& v);
// The resolved value of one config key path ("optim.lr") in cfg.
nlohmann::json config_value(const Config& cfg, const std::string& key);

}  // namespace pg
