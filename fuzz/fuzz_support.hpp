// Shared by the libFuzzer targets: a scratch file for readers that take a
// path, and the rule that only the documented error types may escape.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include "ldaproj/error.hpp"

namespace ldaproj::fuzzing {

// One file per fuzzing process (libFuzzer may run several with -jobs), in
// memory when /dev/shm exists.
inline std::filesystem::path scratch_file(const char* extension) {
  const std::filesystem::path dir =
      std::filesystem::exists("/dev/shm") ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
  return dir / ("ldaproj-fuzz-" + std::to_string(getpid()) + extension);
}

inline void write_bytes(const std::filesystem::path& path, const std::uint8_t* data, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

// An error the program does not promise (anything but ldaproj::Error and its
// InputError) is a finding: abort so libFuzzer keeps the input.
[[noreturn]] inline void unexpected(const std::exception& e) {
  std::fprintf(stderr, "unexpected exception: %s\n", e.what());
  std::abort();
}

}  // namespace ldaproj::fuzzing
