// Builds trained stores from the bundled demo data for tests that need one
// quickly: the texts are imported for real, but embeddings are seeded random
// unit vectors stored under the bundled model's name and dimension, so the
// store trains, serves `ldaproj query` and resumes `ldaproj embed` without
// paying for a full encoder run.
#pragma once
#include <sqlite3.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "ldaproj/importer.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/train.hpp"

namespace ldaproj::testing_support {

inline const std::string kBundledModelName = "all-MiniLM-L6-v2";
inline constexpr std::size_t kBundledModelDim = 384;

inline std::filesystem::path demo_file(const std::string& name) {
  return std::filesystem::path(LDAPROJ_SOURCE_DIR) / "data" / "demo" / name;
}

inline Matrix random_unit_rows(std::size_t rows, std::size_t cols, std::uint32_t seed) {
  Matrix m(rows, cols);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  for (std::size_t i = 0; i < rows; ++i) {
    double sq = 0;
    for (std::size_t j = 0; j < cols; ++j) sq += std::pow(m(i, j) = normal(rng), 2.0);
    for (std::size_t j = 0; j < cols; ++j) m(i, j) = static_cast<float>(m(i, j) / std::sqrt(sq));
  }
  return m;
}

// Gives every text without an embedding a random one.
inline void embed_randomly(Store& store, std::uint32_t seed = 1) {
  const std::int64_t model = store.ensure_model(kBundledModelName, kBundledModelDim);
  for (const EntityKind kind : {EntityKind::Question, EntityKind::Answer}) {
    const auto pending = store.missing_embeddings(model, kind);
    std::vector<std::int64_t> ids;
    for (const auto& p : pending) ids.push_back(p.id);
    store.put_embeddings(model, kind, ids, random_unit_rows(ids.size(), kBundledModelDim, seed++));
  }
}

// The demo files (or only extra.jsonl when `small`), embedded and trained.
inline void make_trained_demo_store(const std::filesystem::path& db, bool small = false) {
  Store store = Store::open(db);
  if (!small) import_file(store, demo_file("clusters.json"));
  import_file(store, demo_file("extra.jsonl"));
  embed_randomly(store);
  train_teacher(store, kBundledModelName, {});
}

// Runs SQL on the database through a connection of its own.
inline std::string raw_sql(const std::filesystem::path& db, const std::string& sql) {
  sqlite3* handle = nullptr;
  sqlite3_open(db.c_str(), &handle);
  std::string result;
  char* error = nullptr;
  sqlite3_exec(
      handle, sql.c_str(),
      [](void* out, int columns, char** values, char**) {
        auto* text = static_cast<std::string*>(out);
        for (int i = 0; i < columns; ++i) *text += std::string(i ? "|" : "") + (values[i] ? values[i] : "NULL");
        *text += "\n";
        return 0;
      },
      &result, &error);
  if (error != nullptr) {
    result = std::string("SQL error: ") + error;
    sqlite3_free(error);
  }
  sqlite3_close(handle);
  return result;
}

inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace ldaproj::testing_support
