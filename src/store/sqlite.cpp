// RAII statement and transaction wrappers over the SQLite C API (see sqlite.hpp).
#include "store/sqlite.hpp"

#include <limits>
#include <string>

#include "ldaproj/error.hpp"

namespace ldaproj::sqlite {

namespace {

// What the user can do about an error class, or "" when SQLite's own text
// says it all. `file` is the database the connection works on.
std::string advice_for(int rc, const std::string& file) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return "another process holds the database lock; retry when it has finished";
    case SQLITE_FULL:
      return "the disk holding " + file + " is full or a file-size limit was reached; free space and run "
             "the command again (the failed write changed nothing)";
    case SQLITE_IOERR:
      return "reading or writing " + file + " or its -wal/-shm files failed: the disk may be full or a "
             "file-size limit reached, or the device is failing; free space and run the command again (the "
             "failed write changed nothing)";
    case SQLITE_READONLY:
      return file + " cannot be written: this user needs write permission on the file and on its directory "
             "(SQLite keeps -wal and -shm files next to it), and the file system must not be read-only";
    case SQLITE_CANTOPEN:
      return "cannot open " + file + " or its -wal/-shm files; check that the directory exists and is "
             "writable";
    case SQLITE_CORRUPT:
      return file + " is damaged; restore it from a backup (sqlite3 " + file +
             " 'PRAGMA integrity_check' lists the damage)";
    default:
      return {};
  }
}

std::string database_file(sqlite3* db) {
  const char* name = db ? sqlite3_db_filename(db, "main") : nullptr;
  return name && *name ? name : "the database";
}

[[noreturn]] void throw_with(sqlite3* db, int rc, std::string_view context, const std::string& detail) {
  const std::string file = database_file(db);
  std::string message = std::string(context) + ": " + detail;
  if (const std::string advice = advice_for(rc, file); !advice.empty()) message += " (" + advice + ")";
  if ((rc & 0xff) == SQLITE_NOTADB) throw InputError(message);
  throw Error(message);
}

}  // namespace

void throw_error(sqlite3* db, int rc, std::string_view context) {
  throw_with(db, rc, context, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

void exec(sqlite3* db, std::string_view sql) {
  const std::string text(sql);
  char* raw_error = nullptr;
  const int rc = sqlite3_exec(db, text.c_str(), nullptr, nullptr, &raw_error);
  if (rc != SQLITE_OK) {
    const std::string detail = raw_error ? raw_error : sqlite3_errstr(rc);
    sqlite3_free(raw_error);
    // sqlite3_exec returns the primary code; the connection has the extended one.
    const int code = sqlite3_extended_errcode(db);
    throw_with(db, (code & 0xff) == (rc & 0xff) ? code : rc, "SQLite: " + text.substr(0, 60), detail);
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
  // A read inside an open transaction already sees that transaction's
  // snapshot: it joins it instead of failing on a nested BEGIN.
  if (kind == Kind::Read && sqlite3_get_autocommit(db_) == 0) return;
  exec(db_, kind == Kind::Write ? "BEGIN IMMEDIATE" : "BEGIN");
  open_ = true;
}

Transaction::~Transaction() {
  // A failed ROLLBACK here means SQLite already rolled back (e.g. after an I/O
  // error); there is nothing more to undo and destructors must not throw.
  if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
  if (!open_) return;  // joined an enclosing transaction, which commits it
  exec(db_, "COMMIT");
  open_ = false;
}

}  // namespace ldaproj::sqlite
