#include "sweep/sweep_spec.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/error.hpp"

namespace pg {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

[[noreturn]] void fail(const std::string& origin, const std::string& what) { throw UserError(origin + ": " + what); }

std::string show(const ordered_json& v) {
  std::string s = v.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

json plain(const ordered_json& v) { return json::parse(v.dump()); }

json::json_pointer pointer_of(const std::string& key) {
  std::string p = "/" + key;
  std::replace(p.begin(), p.end(), '.', '/');
  return json::json_pointer(p);
}

// A sweep key must name one config field. The config loader words the error (and suggests the
// key meant) when it is unknown; a section name is refused here.
void check_key(const std::string& key, const std::string& where) {
  static const std::set<std::string> keys = [] {
    std::set<std::string> s;
    for (const FieldInfo& f : config_fields()) s.insert(f.key);
    return s;
  }();
  if (keys.count(key)) return;
  if (key.empty()) fail(where, "empty config key");
  json probe;
  probe[pointer_of(key)] = json::object();
  from_json(probe, where);  // throws "unknown key ..." for a key that is not a config path
  fail(where, "'" + key + "' is a config section, expected a key naming one of its fields");
}

void check_scalar(const ordered_json& v, const std::string& where) {
  if (!v.is_primitive() || v.is_null()) fail(where, "expected a number, string or boolean, got " + show(v));
}

std::vector<Override> read_overrides(const ordered_json& obj, const std::string& where) {
  if (!obj.is_object()) fail(where, "expected an object of key.path: value, got " + show(obj));
  std::vector<Override> out;
  for (const auto& [k, v] : obj.items()) {
    check_key(k, where);
    check_scalar(v, where + "." + k);
    out.emplace_back(k, plain(v));
  }
  return out;
}

bool has_key(const std::vector<Override>& v, const std::string& key) {
  return std::any_of(v.begin(), v.end(), [&](const Override& o) { return o.first == key; });
}

std::string sanitise(const std::string& s) {
  std::string out = s;
  for (char& c : out) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '=' || c == ',' || c == '+' || c == '-';
    if (!ok) c = '_';
  }
  return out;
}

// Keeps directory names well under the usual 255-byte limit while staying unique.
std::string shorten(const std::string& name) {
  constexpr size_t kMax = 120;
  if (name.size() <= kMax) return name;
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  char hex[20];
  std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
  return name.substr(0, kMax - 17) + "~" + hex;
}

}  // namespace

std::string value_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();  // numbers: shortest round-trip text; true/false
}

json config_value(const Config& cfg, const std::string& key) { return to_json(cfg).at(pointer_of(key)); }

std::string run_name(const std::vector<Override>& varying) {
  if (varying.empty()) return "base";
  std::string s;
  for (const auto& [k, v] : varying) s += (s.empty() ? "" : ",") + k + "=" + value_text(v);
  return sanitise(s);
}

Sweep parse_sweep(const ordered_json& j, const std::string& origin) {
  if (!j.is_object()) fail(origin, "expected a JSON object with base, set, grid and/or list, got " + show(j));
  Sweep sw;
  sw.file = origin;
  bool have_list = false;
  for (const auto& [k, v] : j.items()) {
    if (k == "description" || k == "$comment") {
      if (!v.is_string()) fail(origin, k + ": expected a string");
    } else if (k == "base") {
      if (!v.is_string() || v.get<std::string>().empty()) fail(origin, "base: expected a config file path");
      sw.base = v.get<std::string>();
    } else if (k == "set") {
      sw.set = read_overrides(v, origin + ": set");
    } else if (k == "grid") {
      if (!v.is_object() || v.empty()) fail(origin, "grid: expected a non-empty object of key.path: [values]");
      for (const auto& [key, values] : v.items()) {
        const std::string where = origin + ": grid." + key;
        check_key(key, origin + ": grid");
        if (!values.is_array() || values.empty()) fail(where, "expected a non-empty array of values, got " + show(values));
        std::vector<json> vals;
        for (const auto& x : values) {
          check_scalar(x, where);
          vals.push_back(plain(x));
        }
        sw.grid.emplace_back(key, std::move(vals));
      }
    } else if (k == "list") {
      have_list = true;
      if (!v.is_array() || v.empty()) fail(origin, "list: expected a non-empty array of override objects");
      for (size_t i = 0; i < v.size(); ++i) sw.list.push_back(read_overrides(v[i], origin + ": list[" + std::to_string(i) + "]"));
    } else {
      fail(origin, "unknown sweep key '" + k + "' (expected base, set, grid, list, description)");
    }
  }
  for (const auto& [key, values] : sw.grid) {
    if (has_key(sw.set, key)) fail(origin, "'" + key + "' is in both set and grid");
    for (size_t i = 0; i < sw.list.size(); ++i)
      if (has_key(sw.list[i], key))
        fail(origin, "'" + key + "' is in both grid and list[" + std::to_string(i) + "]");
  }

  // The base, resolved once; each run overlays its overrides on its JSON and is validated whole.
  Config base;
  try {
    base = sw.base.empty() ? default_config() : load_config(sw.base);
  } catch (const UserError& e) {
    fail(origin, "base: " + std::string(e.what()));
  }
  const json base_tree = to_json(base);

  std::vector<std::vector<Override>> points{{}};
  for (const auto& [key, values] : sw.grid) {
    std::vector<std::vector<Override>> next;
    for (const auto& p : points)
      for (const auto& val : values) {
        next.push_back(p);
        next.back().emplace_back(key, val);
      }
    points = std::move(next);
  }
  const std::vector<std::vector<Override>> entries = have_list ? sw.list : std::vector<std::vector<Override>>{{}};

  std::set<std::string> names;
  for (const auto& p : points)
    for (const auto& e : entries) {
      SweepRun run;
      run.varying = p;
      run.varying.insert(run.varying.end(), e.begin(), e.end());
      run.name = shorten(run_name(run.varying));
      json tree = base_tree;
      for (const auto& [k, v] : sw.set) tree[pointer_of(k)] = v;
      for (const auto& [k, v] : run.varying) tree[pointer_of(k)] = v;
      const std::string where = origin + ": run " + run.name;
      run.config = from_json(tree, where);
      validate(run.config, where);
      if (!names.insert(run.name).second) fail(origin, "two runs have the same name '" + run.name + "'");
      for (const auto& [k, v] : run.varying)
        if (std::find(sw.varying_keys.begin(), sw.varying_keys.end(), k) == sw.varying_keys.end())
          sw.varying_keys.push_back(k);
      sw.runs.push_back(std::move(run));
    }
  return sw;
}

Sweep load_sweep(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) fail(path, "no such sweep file");
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  ordered_json j;
  try {
    j = ordered_json::parse(text.str());
  } catch (const ordered_json::parse_error& e) {
    std::string what = e.what();
    if (const size_t p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    fail(path, "invalid JSON: " + what);
  }
  return parse_sweep(j, path);
}

}  // namespace pg
