#include "core/version.hpp"
namespace pg {
const char* version() { return "0.1.0"; }
const char* backends() {
#ifdef POLARGPT_WITH_CUDA
  return "cpu, cuda";
#else
  return "cpu";
#endif
}
const char* train_devices() { return backends(); }  // the trainer runs on every backend built
}  // namespace pg
