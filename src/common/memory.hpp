// How much memory the machine has free now, for refusing a run that cannot
// fit before it starts (with a message saying how much it needs).
#pragma once
#include <cstddef>
#include <string>

namespace ldaproj::detail {

// Bytes this process can allocate now (the kernel's MemAvailable), or 0 when unknown.
std::size_t available_memory_bytes();

// "1.2 GB"
std::string gigabytes(std::size_t bytes);

}  // namespace ldaproj::detail
