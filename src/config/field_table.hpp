// The field table behind the config (internal to src/config/). One row per field: its key path,
// where it lives in Config, its allowed values and a one-line description. The field's type comes
// from the struct member it points at (int, uint64_t, double, bool, std::string; a string with
// choices is an enum). Adding a field: a member with its default in config.hpp, one row in
// field_table.cpp. Adding a section: a struct in config.hpp, a member of Config, its rows.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "config/config.hpp"

namespace pg::config_table {

using FieldRef = std::variant<int*, uint64_t*, double*, bool*, std::string*>;

// What a field accepts beyond its type: an interval for numbers, a list for enums, or that a
// string must not be empty.
struct Constraint {
  std::optional<double> lo, hi;
  bool lo_open = false, hi_open = false;
  std::vector<std::string> choices;
  bool non_empty = false;
};

inline Constraint any() { return {}; }
inline Constraint at_least(double lo) {
  Constraint c;
  c.lo = lo;
  return c;
}
inline Constraint greater_than(double lo) {
  Constraint c = at_least(lo);
  c.lo_open = true;
  return c;
}
inline Constraint closed(double lo, double hi) {  // [lo, hi]
  Constraint c = at_least(lo);
  c.hi = hi;
  return c;
}
inline Constraint half_open(double lo, double hi) {  // [lo, hi)
  Constraint c = closed(lo, hi);
  c.hi_open = true;
  return c;
}
inline Constraint one_of(std::initializer_list<const char*> values) {
  Constraint c;
  c.choices.assign(values.begin(), values.end());
  return c;
}
inline Constraint non_empty() {
  Constraint c;
  c.non_empty = true;
  return c;
}

struct Field {
  const char* key;              // "model.n_layer"
  FieldRef (*ref)(Config&);     // the member it names
  Constraint check;
  const char* description;      // one line, Markdown allowed
};

// PG_FIELD(model, n_layer) -> the key "model.n_layer" and an accessor for cfg.model.n_layer, so
// a key can never drift from its struct field. `name` may itself be dotted (a sub-struct).
#define PG_FIELD(section, name) \
  #section "." #name, [](::pg::Config& c) -> ::pg::config_table::FieldRef { return &c.section.name; }

// Every field, in the order the README lists them.
const std::vector<Field>& fields();

}  // namespace pg::config_table
