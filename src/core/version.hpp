#pragma once
namespace pg {
const char* version();
const char* backends();  // the backends compiled into this build, e.g. "cpu, cuda"
const char* train_devices();  // the devices `polargpt train` runs on in this build, e.g. "cpu, cuda"
}  // namespace pg
