#pragma once
namespace pg {
const char* version();
}
