// CRC-32C (Castagnoli), the checksum of TensorBoard's record framing (and of iSCSI, ext4, ...).
//
// Reflected polynomial 0x82F63B78, initial value 0xFFFFFFFF, final XOR 0xFFFFFFFF, one byte at a
// time through a 256-entry table. crc32c("123456789") = 0xE3069283.
//
// TensorBoard stores the "masked" CRC, rotated right by 15 bits plus a constant, so that a CRC
// computed over data that itself contains CRCs does not degenerate:
//   masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8   (mod 2^32)
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pg::io {

// Continues a CRC-32C over n more bytes: crc32c_extend(crc32c(a), b) == crc32c(a + b).
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);
inline uint32_t crc32c(const void* data, size_t n) { return crc32c_extend(0, data, n); }
inline uint32_t crc32c(std::string_view s) { return crc32c(s.data(), s.size()); }

inline uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u; }

}  // namespace pg::io
