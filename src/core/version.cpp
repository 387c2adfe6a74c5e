#include "core/version.hpp"
namespace pg {
const char* version() { return "0.1.0"; }
}
