// Logical dump of a store's tables (see dump.hpp).
#include "store/dump.hpp"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "store/sqlite.hpp"
#include "store/store_impl.hpp"

namespace ldaproj::store_detail {

namespace {

std::string render_value(const sqlite::Statement& row, int column) {
  switch (row.column_type(column)) {
    case SQLITE_NULL:
      return "NULL";
    case SQLITE_INTEGER:
      return std::to_string(row.column_int(column));
    case SQLITE_FLOAT: {
      char text[40];
      std::snprintf(text, sizeof text, "%.17g", row.column_double(column));
      return text;
    }
    case SQLITE_BLOB: {
      static constexpr char kHex[] = "0123456789abcdef";
      std::string hex = "x'";
      for (const unsigned char byte : row.column_blob(column)) {
        hex.push_back(kHex[byte >> 4]);
        hex.push_back(kHex[byte & 0x0f]);
      }
      return hex + "'";
    }
    default: {
      std::string quoted = "'";
      for (const char c : row.column_text(column)) {
        if (c == '\'') quoted.push_back('\'');
        quoted.push_back(c);
      }
      return quoted + "'";
    }
  }
}

}  // namespace

std::string logical_dump(const Store& store) {
  sqlite3* db = store.impl().db;
  sqlite::Transaction snapshot(db, sqlite::Transaction::Kind::Read);
  std::string dump;
  for (const char* pragma : {"user_version", "application_id"}) {
    sqlite::Statement value(db, std::string("PRAGMA ") + pragma);
    value.step();
    dump += std::string(pragma) + "=" + std::to_string(value.column_int(0)) + "\n";
  }
  std::vector<std::string> tables;
  {
    sqlite::Statement list(db, "SELECT name, sql FROM sqlite_master ORDER BY type, name");
    while (list.step()) {
      dump += "schema " + list.column_text(0) + ": " + list.column_text(1) + "\n";
    }
    sqlite::Statement names(db,
                            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                            "ORDER BY name");
    while (names.step()) tables.push_back(names.column_text(0));
  }
  for (const std::string& table : tables) {
    sqlite::Statement rows(db, "SELECT * FROM \"" + table + "\"");
    std::vector<std::string> lines;
    while (rows.step()) {
      std::string line;
      for (int c = 0; c < rows.column_count(); ++c) {
        if (c > 0) line.push_back('|');
        line.append(render_value(rows, c));
      }
      lines.push_back(std::move(line));
    }
    std::sort(lines.begin(), lines.end());
    dump += "table " + table + " (" + std::to_string(lines.size()) + " rows)\n";
    for (const std::string& line : lines) dump += "  " + line + "\n";
  }
  snapshot.commit();
  return dump;
}

}  // namespace ldaproj::store_detail
