// Errors. A pg::UserError carries one line for the user (bad config, flag, data file, checkpoint)
// and makes the CLI exit with code 2; anything else escaping is a bug and exits with 1.
#pragma once
#include <stdexcept>
#include <string>

namespace pg {

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Internal invariant; failing it is a bug in polargpt, not in the user's input.
#define PG_CHECK(cond, msg)                                                                   \
  do {                                                                                        \
    if (!(cond))                                                                              \
      throw std::logic_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + \
                             (msg));                                                          \
  } while (0)

}  // namespace pg
