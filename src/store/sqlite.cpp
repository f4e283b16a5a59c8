// RAII statement and transaction wrappers over the SQLite C API (see sqlite.hpp).
#include "store/sqlite.hpp"

#include <limits>

#include "ldaproj/error.hpp"

namespace ldaproj::sqlite {

void throw_error(sqlite3* db, int rc, std::string_view context) {
  const int primary = rc & 0xff;
  std::string message = std::string(context) + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
    message += " (another process holds the database lock; retry when it has finished)";
  }
  if (primary == SQLITE_NOTADB) throw InputError(message);
  throw Error(message);
}

void exec(sqlite3* db, std::string_view sql) {
  const std::string text(sql);
  char* raw_error = nullptr;
  const int rc = sqlite3_exec(db, text.c_str(), nullptr, nullptr, &raw_error);
  if (rc != SQLITE_OK) {
    std::string detail = raw_error ? raw_error : sqlite3_errstr(rc);
    sqlite3_free(raw_error);
    std::string context = "SQLite: " + text.substr(0, 60);
    const int primary = rc & 0xff;
    if (primary == SQLITE_NOTADB) throw InputError(context + ": " + detail);
    if (primary == SQLITE_BUSY) detail += " (another process holds the database lock; retry when it has finished)";
    throw Error(context + ": " + detail);
  }
}

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db), sql_(sql) {
  if (sql.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw Error("SQL statement too long");
  }
  const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr);
  if (rc != SQLITE_OK) throw_error(db, rc, "SQLite: preparing \"" + sql_ + "\"");
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

namespace {
void check_bind(sqlite3* db, int rc, const std::string& sql) {
  if (rc != SQLITE_OK) throw_error(db, rc, "SQLite: binding a parameter of \"" + sql + "\"");
}
}  // namespace

Statement& Statement::bind(int index, std::int64_t value) {
  check_bind(db_, sqlite3_bind_int64(stmt_, index, value), sql_);
  return *this;
}

Statement& Statement::bind(int index, double value) {
  check_bind(db_, sqlite3_bind_double(stmt_, index, value), sql_);
  return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
  // SQLITE_TRANSIENT: SQLite copies, so temporaries are safe to pass.
  check_bind(db_, sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
             sql_);
  return *this;
}

Statement& Statement::bind_blob(int index, std::span<const unsigned char> bytes) {
  // A zero-length blob must still be a blob, not NULL: pass a valid pointer.
  static const unsigned char empty = 0;
  const void* data = bytes.empty() ? &empty : bytes.data();
  check_bind(db_, sqlite3_bind_blob64(stmt_, index, data, bytes.size(), SQLITE_TRANSIENT), sql_);
  return *this;
}

Statement& Statement::bind_null(int index) {
  check_bind(db_, sqlite3_bind_null(stmt_, index), sql_);
  return *this;
}

bool Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  throw_error(db_, rc, "SQLite: running \"" + sql_ + "\"");
}

void Statement::run() {
  if (step()) throw Error("SQLite: \"" + sql_ + "\" returned rows where none were expected");
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::int64_t Statement::column_int(int column) const { return sqlite3_column_int64(stmt_, column); }

double Statement::column_double(int column) const { return sqlite3_column_double(stmt_, column); }

std::string Statement::column_text(int column) const {
  const auto* text = sqlite3_column_text(stmt_, column);
  const int size = sqlite3_column_bytes(stmt_, column);
  if (text == nullptr || size <= 0) return {};
  return std::string(reinterpret_cast<const char*>(text), static_cast<std::size_t>(size));
}

std::span<const unsigned char> Statement::column_blob(int column) const {
  const auto* data = static_cast<const unsigned char*>(sqlite3_column_blob(stmt_, column));
  const int size = sqlite3_column_bytes(stmt_, column);
  if (data == nullptr || size <= 0) return {};
  return {data, static_cast<std::size_t>(size)};
}

bool Statement::column_is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

int Statement::column_count() const { return sqlite3_column_count(stmt_); }

int Statement::column_type(int column) const { return sqlite3_column_type(stmt_, column); }

Transaction::Transaction(sqlite3* db, Kind kind) : db_(db) {
  exec(db_, kind == Kind::Write ? "BEGIN IMMEDIATE" : "BEGIN");
  open_ = true;
}

Transaction::~Transaction() {
  // A failed ROLLBACK here means SQLite already rolled back (e.g. after an I/O
  // error); there is nothing more to undo and destructors must not throw.
  if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
  exec(db_, "COMMIT");
  open_ = false;
}

}  // namespace ldaproj::sqlite
