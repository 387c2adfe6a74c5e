// Config loading, --set overrides, validation, the resolved JSON and the Markdown reference, all
// driven by the field table (field_table.cpp). Every error is one line: "<origin>: <what>".
#include "config/config.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "config/field_table.hpp"
#include "core/error.hpp"

namespace pg {
namespace {

using config_table::Constraint;
using config_table::Field;
using config_table::FieldRef;
using nlohmann::json;

enum class Kind { Int, UInt64, Double, Bool, Enum, String };

Kind kind_of(const Field& f) {
  static Config probe;  // only its member addresses' types are looked at
  switch (f.ref(probe).index()) {
    case 0: return Kind::Int;
    case 1: return Kind::UInt64;
    case 2: return Kind::Double;
    case 3: return Kind::Bool;
    default: return f.check.choices.empty() ? Kind::String : Kind::Enum;
  }
}

const char* type_name(Kind k) {
  switch (k) {
    case Kind::Int: return "int";
    case Kind::UInt64: return "uint64";
    case Kind::Double: return "float";
    case Kind::Bool: return "bool";
    case Kind::Enum: return "enum";
    case Kind::String: return "string";
  }
  return "?";
}

[[noreturn]] void fail(const std::string& origin, std::string what) {
  std::string line = origin.empty() ? what : origin + ": " + what;
  std::replace(line.begin(), line.end(), '\n', ' ');  // one line, whatever the input held
  std::replace(line.begin(), line.end(), '\r', ' ');
  throw UserError(line);
}

// A value as the user wrote it in JSON, cut short so that a stray array cannot flood the line.
std::string show(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

std::string quoted(const std::string& s) { return show(json(s)); }

// Shortest decimal that reads back as the same double (1, 0.5, 1e-08).
std::string fmt_num(double x) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, end);
}

std::string range_text(const Constraint& c) {
  if (c.non_empty) return "non-empty";
  if (c.lo && c.hi)
    return "in " + std::string(c.lo_open ? "(" : "[") + fmt_num(*c.lo) + ", " + fmt_num(*c.hi) +
           (c.hi_open ? ")" : "]");
  if (c.lo) return (c.lo_open ? "> " : ">= ") + fmt_num(*c.lo);
  if (c.hi) return (c.hi_open ? "< " : "<= ") + fmt_num(*c.hi);
  return "";
}

std::string joined(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

// "an integer >= 1", "a number in [0, 1)", "one of layernorm|rmsnorm|none".
std::string expected(const Field& f) {
  const std::string range = range_text(f.check);
  const std::string suffix = range.empty() ? "" : " " + range;
  switch (kind_of(f)) {
    case Kind::Int: return "an integer" + suffix;
    case Kind::UInt64: return "a non-negative integer" + suffix;
    case Kind::Double: return "a number" + suffix;
    case Kind::Bool: return "true or false";
    case Kind::Enum: return "one of " + joined(f.check.choices, "|");
    case Kind::String: return f.check.non_empty ? "a non-empty string" : "a string";
  }
  return "";
}

bool in_range(const Constraint& c, double x) {
  if (c.lo && (c.lo_open ? !(x > *c.lo) : !(x >= *c.lo))) return false;
  if (c.hi && (c.hi_open ? !(x < *c.hi) : !(x <= *c.hi))) return false;
  return true;
}

// An integral JSON number as a double (exact for every int and for uint64 up to 2^53), or nullopt.
// 4.0 and 1e3 count as integers; 4.5 does not.
std::optional<double> integral(const json& v) {
  if (v.is_number_unsigned()) return static_cast<double>(v.get<uint64_t>());
  if (v.is_number_integer()) return static_cast<double>(v.get<int64_t>());
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::trunc(d)) return d;
  }
  return std::nullopt;
}

// Checks `v` against the field's type and constraint, then stores it in cfg.
void assign(const Field& f, Config& cfg, const json& v, const std::string& origin) {
  auto bad = [&] { fail(origin, std::string(f.key) + ": expected " + expected(f) + ", got " + show(v)); };
  const Constraint& c = f.check;
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, int>) {
          const auto x = integral(v);
          if (!x) bad();
          if (*x < INT_MIN || *x > INT_MAX)
            fail(origin, std::string(f.key) + ": expected a 32-bit integer, got " + show(v));
          if (!in_range(c, *x)) bad();
          *p = static_cast<int>(*x);
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          uint64_t x = 0;
          if (v.is_number_unsigned()) {
            x = v.get<uint64_t>();
          } else {
            const auto d = integral(v);
            if (!d || *d < 0 || *d >= 18446744073709551616.0) bad();
            x = static_cast<uint64_t>(*d);
          }
          if (!in_range(c, static_cast<double>(x))) bad();
          *p = x;
        } else if constexpr (std::is_same_v<T, double>) {
          if (!v.is_number()) bad();
          const double x = v.get<double>();
          if (!std::isfinite(x) || !in_range(c, x)) bad();
          *p = x;
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!v.is_boolean()) bad();
          *p = v.get<bool>();
        } else {
          if (!v.is_string()) bad();
          const auto& s = v.get_ref<const std::string&>();
          if (c.non_empty && s.empty()) bad();
          if (!c.choices.empty() && std::find(c.choices.begin(), c.choices.end(), s) == c.choices.end())
            bad();
          *p = s;
        }
      },
      f.ref(cfg));
}

json read(const Field& f, const Config& cfg) {
  // The accessor takes a mutable Config; reading through it never writes.
  return std::visit([](auto* p) { return json(*p); }, f.ref(const_cast<Config&>(cfg)));
}

const Field* find_field(const std::string& key) {
  for (const Field& f : config_table::fields())
    if (key == f.key) return &f;
  return nullptr;
}

// A section is any proper prefix of a key ending at a dot: "model", or "dist.nccl" later on.
bool is_section(const std::string& path) {
  for (const Field& f : config_table::fields())
    if (std::string_view(f.key).starts_with(path + ".")) return true;
  return false;
}

// Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

// The key the user probably meant: a close name beside it ("model.n_layers" -> "model.n_layer"),
// else the same name in another section ("train.lr" -> "optim.lr"); "" when nothing is close.
std::string closest_key(const std::string& path) {
  const size_t dot = path.rfind('.');
  const std::string parent = dot == std::string::npos ? "" : path.substr(0, dot);
  const std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
  const std::string prefix = parent.empty() ? "" : parent + ".";

  std::set<std::string> siblings;
  for (const Field& f : config_table::fields()) {
    const std::string_view key(f.key);
    if (!key.starts_with(prefix)) continue;
    const std::string_view rest = key.substr(prefix.size());
    siblings.emplace(rest.substr(0, rest.find('.')));
  }
  std::string best;
  size_t best_d = std::max<size_t>(1, name.size() / 3) + 1;
  for (const std::string& s : siblings)
    if (const size_t d = edit_distance(name, s); d < best_d) best = prefix + s, best_d = d;
  if (!best.empty()) return best;

  for (const Field& f : config_table::fields()) {
    const std::string_view key(f.key);
    if (key.substr(key.rfind('.') + 1) == name) return f.key;
  }
  return "";
}

std::string unknown(const std::string& what, const std::string& path) {
  const std::string guess = closest_key(path);
  return "unknown " + what + " '" + path + "'" + (guess.empty() ? "" : " (did you mean '" + guess + "'?)");
}

// Reads one member of the JSON tree at `path`: a field, or a section to descend into.
void read_node(Config& cfg, const std::string& path, const json& v, const std::string& origin) {
  if (const Field* f = find_field(path)) return assign(*f, cfg, v, origin);
  if (!is_section(path))
    fail(origin, unknown(path.find('.') == std::string::npos ? "section" : "key", path));
  if (!v.is_object()) fail(origin, path + ": expected an object (a config section), got " + show(v));
  for (const auto& [k, sub] : v.items()) read_node(cfg, path + "." + k, sub, origin);
}

// The text after "key=" as the JSON value the field's type calls for. Anything that does not fit
// comes back as a JSON string, so assign() reports it as `got "..."`.
json override_value(const Field& f, const std::string& raw) {
  switch (kind_of(f)) {
    case Kind::Bool:
      if (raw == "true") return true;
      if (raw == "false") return false;
      return raw;
    case Kind::Int:
    case Kind::UInt64:
    case Kind::Double: {
      json v = json::parse(raw, nullptr, /*allow_exceptions=*/false);
      return v.is_number() ? v : json(raw);
    }
    case Kind::Enum:
    case Kind::String:
      if (raw.size() >= 2 && raw.front() == '"') {
        json v = json::parse(raw, nullptr, false);
        if (v.is_string()) return v;
      }
      return raw;
  }
  return raw;
}

json read_json_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "no such config file");
  if (fs::is_directory(path, ec)) fail(path, "is a directory, expected a JSON config file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open config file: ") + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) fail(path, std::string("cannot read config file: ") + std::strerror(errno));
  try {
    return json::parse(text.str());
  } catch (const json::parse_error& e) {
    // what() is "[json.exception.parse_error.101] parse error at line 3, column 5: ..."
    std::string what = e.what();
    if (const size_t p = what.find("] "); what.starts_with("[json.exception") && p != std::string::npos)
      what = what.substr(p + 2);
    fail(path, "invalid JSON: " + what);
  }
}

}  // namespace

void apply_override(Config& cfg, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  auto trim = [](std::string s) {
    s.erase(0, s.find_first_not_of(" \t"));
    s.erase(s.find_last_not_of(" \t") + 1);
    return s;
  };
  const std::string key = eq == std::string::npos ? "" : trim(assignment.substr(0, eq));
  if (key.empty()) fail("--set", "expected key.path=value, got " + quoted(assignment));
  const Field* f = find_field(key);
  if (!f) {
    if (is_section(key))
      fail("--set", "'" + key + "' is a section, expected key.path=value naming one of its fields");
    fail("--set", unknown("key", key));
  }
  assign(*f, cfg, override_value(*f, assignment.substr(eq + 1)), "--set");
}

Config from_json(const json& j, const std::string& origin) {
  if (!j.is_object()) fail(origin, "expected a JSON object at the top level, got " + show(j));
  Config cfg;
  for (const auto& [k, v] : j.items()) {
    if (k == "$comment" || k == "description") {  // free text for the reader of the file
      if (!v.is_string()) fail(origin, k + ": expected a string, got " + show(v));
      continue;
    }
    read_node(cfg, k, v, origin);
  }
  return cfg;
}

json to_json(const Config& cfg) {
  json j = json::object();
  for (const Field& f : config_table::fields()) {
    std::string pointer = "/" + std::string(f.key);
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    j[json::json_pointer(pointer)] = read(f, cfg);
  }
  return j;
}

namespace {
// The spectral section and the lipschitz variant against the rest of the config.
void validate_spectral(const Config& cfg, const std::string& origin) {
  const SpectralConfig& s = cfg.spectral;
  std::stringstream roles(s.roles);
  for (std::string r; std::getline(roles, r, ',');)
    if (r != "attn" && r != "mlp" && r != "expert" && r != "head")
      fail(origin, "spectral.roles: unknown role '" + r + "', expected a comma-separated list of attn|mlp|expert|head");
  if (s.method == "softcap" && cfg.optim.kind != "muon")
    fail(origin, "spectral.method = softcap needs optim.kind = muon (its coupling bounds the update's spectral norm, "
                 "which AdamW does not); use hardcap or normalize with adamw");
  const ModelConfig& m = cfg.model;
  if (m.variant == "lipschitz") {
    if (m.norm != "none" || m.qk_norm || m.logit_softcap != 0.0 || m.bias || m.tie_embeddings)
      fail(origin, "model.variant = lipschitz needs model.norm = none, model.qk_norm = false, model.logit_softcap = 0, "
                   "model.bias = false and model.tie_embeddings = false");
    if (m.activation != "gelu") fail(origin, "model.variant = lipschitz needs model.activation = gelu");
  }
}
}  // namespace

void validate(const Config& cfg, const std::string& origin) {
  // Per field: the same checks as loading, run on a scratch copy.
  Config scratch = cfg;
  for (const Field& f : config_table::fields()) assign(f, scratch, read(f, cfg), origin);

  // Across fields.
  const ModelConfig& m = cfg.model;
  if (m.d_model % m.n_head != 0)
    fail(origin, "model.d_model (" + std::to_string(m.d_model) + ") must be divisible by model.n_head (" +
                     std::to_string(m.n_head) + ")");
  if (m.pos == "rope" && cfg.d_head() % 2 != 0)
    fail(origin, "model.pos = rope needs an even head size, got model.d_model / model.n_head = " +
                     std::to_string(cfg.d_head()));
  if (m.d_ff == 0 && m.d_model > INT_MAX / 4)
    fail(origin, "model.d_model (" + std::to_string(m.d_model) +
                     ") is too large for the default model.d_ff = 4 * model.d_model; set model.d_ff");
  const MoeConfig& e = cfg.moe;
  if (m.variant == "moe" && e.n_expert == 0)
    fail(origin, "model.variant = moe needs moe.n_expert >= 1");
  if (e.n_expert > 0 && m.variant != "moe")
    fail(origin, "moe.n_expert = " + std::to_string(e.n_expert) + " needs model.variant = moe, got " + m.variant);
  if (e.n_expert > 0 && e.top_k > e.n_expert)
    fail(origin, "moe.top_k (" + std::to_string(e.top_k) + ") must be <= moe.n_expert (" +
                     std::to_string(e.n_expert) + ")");
  if (e.n_expert > 0 && e.every > m.n_layer)
    fail(origin, "moe.every (" + std::to_string(e.every) + ") must be <= model.n_layer (" +
                     std::to_string(m.n_layer) + ") so that at least one block is MoE");
  // Kernels index a micro-batch's tokens with 32-bit integers.
  if (int64_t(cfg.train.batch_size) * m.seq_len > INT_MAX)
    fail(origin, "train.batch_size * model.seq_len = " +
                     std::to_string(int64_t(cfg.train.batch_size) * m.seq_len) +
                     " tokens per micro-batch, expected at most " + std::to_string(INT_MAX));
  validate_spectral(cfg, origin);
}

Config default_config(const std::vector<std::string>& overrides) {
  Config cfg;
  for (const std::string& o : overrides) apply_override(cfg, o);
  validate(cfg, overrides.empty() ? "defaults" : "--set");
  return cfg;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  Config cfg = from_json(read_json_file(path), path);
  for (const std::string& o : overrides) apply_override(cfg, o);
  validate(cfg, path);
  return cfg;
}

std::vector<FieldInfo> config_fields() {
  const Config defaults;
  std::vector<FieldInfo> out;
  for (const Field& f : config_table::fields())
    out.push_back({f.key, type_name(kind_of(f)), read(f, defaults), f.check.choices,
                   range_text(f.check), f.description});
  return out;
}

std::string describe_markdown() {
  auto cell = [](std::string s) {  // a '|' would end the cell
    for (size_t p = 0; (p = s.find('|', p)) != std::string::npos; p += 2) s.insert(p, "\\");
    return s;
  };
  std::string md = "| key | type | default | description |\n|---|---|---|---|\n";
  for (const FieldInfo& f : config_fields()) {
    std::string desc = f.description;
    if (!f.choices.empty()) {
      desc += " One of: ";
      for (size_t i = 0; i < f.choices.size(); ++i) desc += (i ? ", `" : "`") + f.choices[i] + "`";
      desc += ".";
    } else if (!f.range.empty()) {
      desc += " Must be " + f.range + ".";
    }
    md += "| `" + f.key + "` | " + f.type + " | `" + cell(show(f.default_value)) + "` | " + cell(desc) + " |\n";
  }
  return md;
}

}  // namespace pg
