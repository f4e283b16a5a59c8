// Store::Impl, shared by store.cpp and the importer (both in src/store), plus
// the float32 BLOB encoding used for embeddings and projection heads.
#pragma once
#include <sqlite3.h>

#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "ldaproj/store.hpp"

namespace ldaproj {

struct Store::Impl {
  sqlite3* db = nullptr;
  std::filesystem::path path;
  bool read_only = false;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl();
};

namespace store_detail {

// Little-endian float32, `values.size() * 4` bytes.
std::vector<unsigned char> encode_floats(std::span<const float> values);

// Decodes a BLOB that must hold exactly `dim` float32 values into `out`;
// throws Error naming `what` (e.g. "embedding of question 12") otherwise.
void decode_floats(std::span<const unsigned char> blob, std::size_t dim, float* out, const std::string& what);

// Current UTC time as ISO-8601 ("2024-05-01T12:34:56Z").
std::string utc_now();

}  // namespace store_detail
}  // namespace ldaproj
