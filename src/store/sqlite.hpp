// Thin RAII layer over the SQLite C API for the store: prepared statements,
// transactions that roll back unless committed, and SQLite errors turned into
// ldaproj::Error with the statement's context.
#pragma once
#include <sqlite3.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ldaproj::sqlite {

// Throws Error (InputError for "not a database") describing `context` and the
// connection's last error.
[[noreturn]] void throw_error(sqlite3* db, int rc, std::string_view context);

// Runs one or more statements that return no rows.
void exec(sqlite3* db, std::string_view sql);

class Statement {
 public:
  Statement(sqlite3* db, std::string_view sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Parameters are 1-based, as in SQLite.
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, double value);
  Statement& bind(int index, std::string_view text);
  Statement& bind_blob(int index, std::span<const unsigned char> bytes);
  Statement& bind_null(int index);

  // Advances; true while a row is available, false when done.
  bool step();
  // Steps a statement that must not return rows (INSERT/UPDATE/DELETE).
  void run();
  // Clears bindings and rewinds so the statement can be stepped again.
  void reset();

  // Columns are 0-based, as in SQLite.
  std::int64_t column_int(int column) const;
  double column_double(int column) const;
  std::string column_text(int column) const;
  std::span<const unsigned char> column_blob(int column) const;
  bool column_is_null(int column) const;
  int column_count() const;
  int column_type(int column) const;

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string sql_;
};

// BEGIN on construction, ROLLBACK on destruction unless commit() ran. Write
// transactions take the write lock up front (IMMEDIATE) so that a busy
// database waits for the busy timeout at BEGIN instead of failing mid-way.
// A read transaction started inside another transaction joins it (and its
// commit() does nothing), so reads nest inside a Store::ReadSnapshot.
class Transaction {
 public:
  enum class Kind { Read, Write };
  Transaction(sqlite3* db, Kind kind);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  sqlite3* db_;
  bool open_ = false;
};

}  // namespace ldaproj::sqlite
