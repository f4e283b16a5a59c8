// The store's schema: the ordered list of migrations and the code that brings
// a database up to kSchemaVersion (PRAGMA user_version counts applied ones).
#pragma once
#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <span>

namespace ldaproj::schema {

// Written to PRAGMA application_id by the first migration, so that another
// program's SQLite file is recognised as "not an ldaproj database".
inline constexpr std::int32_t kApplicationId = 0x4C44504A;  // "LDPJ"

struct Migration {
  int version;              // user_version after this migration
  const char* description;  // for error messages
  const char* sql;
};

// Every migration in order; the last one's version is kSchemaVersion.
std::span<const Migration> migrations();

int user_version(sqlite3* db);
std::int32_t application_id(sqlite3* db);

// Throws InputError unless the database at `path` is empty (new) or an ldaproj
// database whose version this build understands.
void check_compatible(sqlite3* db, const std::filesystem::path& path);

// Applies every pending migration, each in its own write transaction; a no-op
// on an up-to-date database. Returns how many were applied.
int migrate(sqlite3* db, const std::filesystem::path& path);

}  // namespace ldaproj::schema
