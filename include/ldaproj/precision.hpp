// Number formats for stored vectors and weights, shared by the teacher's head
// storage and the encoder's weights.
#pragma once
#include <string_view>

namespace ldaproj {

// fp32 is exact; bf16 halves the bytes streamed per multiply (8-bit mantissa),
// int8 quarters them (one scale per row or column). docs/BENCHMARKS.md gives
// the speed and the accuracy cost of each where it is used.
enum class Precision { F32, BF16, I8 };
std::string_view to_string(Precision precision);  // "fp32", "bf16", "int8"
Precision parse_precision(std::string_view name);  // InputError on unknown

}  // namespace ldaproj
