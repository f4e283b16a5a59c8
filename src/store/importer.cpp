// Importing Q-A cluster files into the store (include/ldaproj/importer.hpp):
// format detection, validation of the whole file before anything is written,
// SHA-256 batch tracking and the one-transaction write of a file's rows.
//
// Decisions, in short:
// - A batch is keyed by the file's absolute, lexically normalised path, and
//   content is counted once: bytes another path already imported add nothing
//   ("already imported as ..."); the same path with new content replaces that
//   batch's rows.
// - A question is (cluster, text): one already in the cluster, from this file
//   or another, is not stored again (its length is the first one's). A row
//   belongs to the batch that stored it; if that file later drops it while
//   another file still has it, re-importing the other file (even unchanged)
//   stores it again.
// - An answer is (cluster, variant): the same text from another file is
//   counted once; other text is a conflict, refused naming both files like
//   two answers of one variant in one file. To change an answer, edit the
//   file that gave it and re-import that file.
// - On an update, rows that are identical in the old and new file (same
//   cluster and text, and variant for answers) keep their ids, so their
//   embeddings survive; only added rows need `ldaproj embed` again.
// - Original format: every cluster needs questions and an answer. JSON Lines:
//   a cluster may get its answer (or its questions) from another file, so only
//   a cluster that ends up with no question and no answer at all is an error.
// - Cluster name/description: a non-empty value from the newest import wins;
//   an absent one keeps what the store had. JSON Lines records may carry
//   "name"/"description" next to a question or answer, or alone in a record
//   {"cluster":..., "name":..., "description":...}; such a record must name a
//   cluster that has questions or answers (in this file or the store).
// - JSON Lines answers without "variant" are "default"; a cluster may give
//   each variant once per file.
// - Question lengths are short, medium or long (JSON Lines: or absent);
//   "novel" questions (the original project's held-out test queries) are
//   skipped in both formats, and any other length is refused.
// - An object that repeats a key is refused (nlohmann would keep the last).
// - Texts are stored verbatim; blank ones are refused.
#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "ldaproj/error.hpp"
#include "common/strict_json.hpp"
#include "ldaproj/importer.hpp"
#include "store/sqlite.hpp"
#include "store/store_impl.hpp"
#include "text/utf8.hpp"

namespace ldaproj {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

// Query groups under this name are held-out test queries in the original
// project's files; importing them would leak test data into training.
constexpr std::string_view kHeldOutGroup = "novel";

struct ParsedQuestion {
  std::string text;
  std::string length_type;
};

struct ParsedAnswer {
  std::string text;
  std::string variant;
  std::string where;  // its record, and
  std::string field;  // its field, for a conflict found in the store
};

struct ParsedCluster {
  std::string external_id;
  std::string name;         // empty: not given
  std::string description;  // empty: not given
  std::vector<ParsedQuestion> questions;
  std::vector<ParsedAnswer> answers;
  std::string where;  // the record that introduced it, for later errors
};

struct ParsedFile {
  std::vector<ParsedCluster> clusters;
  std::int64_t questions = 0;
  std::int64_t answers = 0;
  std::int64_t held_out = 0;
  std::int64_t duplicate_questions = 0;
};

[[noreturn]] void fail(const std::string& file, const std::string& where, const std::string& message) {
  throw InputError(file + ": " + (where.empty() ? "" : where + ": ") + message);
}

// A JSON-quoted, shortened rendering of user text for messages.
std::string json_quoted(std::string_view text) {
  constexpr std::size_t kMax = 60;
  const bool cut = text.size() > kMax;
  std::string shown(text.substr(0, kMax));
  std::string rendered = Json(shown).dump(-1, ' ', false, Json::error_handler_t::replace);
  if (cut) rendered.insert(rendered.size() - 1, "...");
  return rendered;
}

bool is_blank(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; });
}

std::string field_error(const std::string& field, const std::string& message) {
  return "field \"" + field + "\": " + message;
}

std::string expected(const char* what, const Json& got) {
  return std::string("expected ") + what + ", got " + got.type_name();
}

struct LineColumn {
  std::size_t line = 1;
  std::size_t column = 1;
};

LineColumn line_column_at(std::string_view text, std::size_t offset) {
  offset = std::min(offset, text.size());
  LineColumn position;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++position.line;
      line_start = i + 1;
    }
  }
  position.column = offset - line_start + 1;
  return position;
}

// nlohmann's message minus its "[json.exception...] parse error at ...:" prefix.
std::string parse_error_reason(const Json::parse_error& error) {
  std::string what = error.what();
  const std::size_t anchor = what.find("parse error");
  const std::size_t colon = what.find(": ", anchor == std::string::npos ? 0 : anchor);
  std::string reason = colon == std::string::npos ? what : what.substr(colon + 2);
  constexpr std::size_t kMax = 200;
  if (reason.size() > kMax) reason = reason.substr(0, kMax) + "...";
  return reason;
}

// Where a parse error happened inside `text` (parsed from its start).
std::size_t parse_error_offset(const Json::parse_error& error, std::size_t text_size) {
  // `byte` counts characters read, so the offending one is at byte - 1.
  const std::size_t read = error.byte == 0 ? 0 : error.byte - 1;
  return std::min(read, text_size);
}

// A number too large for a double (1e999) is not a syntax error to nlohmann
// but an out_of_range exception; its message quotes the number.
std::string number_range_reason(const Json::out_of_range& error) {
  const std::string what = error.what();
  const std::size_t open = what.find('\'');
  const std::size_t close = what.rfind('\'');
  const std::string number =
      open != std::string::npos && close > open ? what.substr(open + 1, std::min<std::size_t>(close - open - 1, 64))
                                                : std::string("?");
  return "the number " + number + " is out of range for a double; write it smaller";
}

// Where the number an out_of_range error quotes first appears in `text`.
std::size_t number_range_offset(const Json::out_of_range& error, std::string_view text) {
  const std::string what = error.what();
  const std::size_t open = what.find('\'');
  const std::size_t close = what.rfind('\'');
  if (open == std::string::npos || close <= open) return 0;
  const std::size_t at = text.find(std::string_view(what).substr(open + 1, close - open - 1));
  return at == std::string_view::npos ? 0 : at;
}

std::string sha256_hex(std::string_view bytes) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  if (!context || EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(context.get(), bytes.data(), bytes.size()) != 1 ||
      EVP_DigestFinal_ex(context.get(), digest, &digest_size) != 1) {
    throw Error("computing SHA-256 failed (OpenSSL)");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(digest_size * 2);
  for (unsigned int i = 0; i < digest_size; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0x0f]);
  }
  return hex;
}

std::string read_whole_file(const fs::path& file) {
  std::error_code ec;
  if (fs::is_directory(file, ec)) {
    throw InputError(file.string() + ": is a directory; give a .json or .jsonl file to import");
  }
  // A pipe (`<(...)`) is a fine source; a device such as /dev/null is not.
  if (fs::is_character_file(file, ec) || fs::is_block_file(file, ec)) {
    throw InputError(file.string() + ": is a device, not a file; give a .json or .jsonl file to import");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError("cannot read " + file.string() + ": " + std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw InputError("cannot read " + file.string() + ": read error");
  return std::move(buffer).str();
}

void check_length(const std::string& text, const std::string& field, const std::string& file,
                  const std::string& where) {
  if (text.size() > kMaxTextBytes) {
    fail(file, where,
         field_error(field, "is " + std::to_string(text.size()) + " bytes long, over the limit of " +
                                std::to_string(kMaxTextBytes) +
                                " (the encoder reads only the first few hundred tokens); shorten or split it"));
  }
}

// A string member that may be absent or null; "" then.
std::string optional_string(const Json& object, const char* key, const std::string& file,
                            const std::string& where, const std::string& field_prefix = {}) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return {};
  if (!it->is_string()) fail(file, where, field_error(field_prefix + key, expected("a string", *it)));
  std::string text = it->get<std::string>();
  check_length(text, field_prefix + key, file, where);
  return text;
}

// A string member that must be present and not blank.
std::string required_text(const Json& value, const std::string& field, const std::string& file,
                          const std::string& where) {
  if (!value.is_string()) fail(file, where, field_error(field, expected("a string", value)));
  std::string text = value.get<std::string>();
  if (is_blank(text)) fail(file, where, field_error(field, "is empty; remove the entry or give it text"));
  check_length(text, field, file, where);
  return text;
}

ParsedFile parse_original(const Json& root, const std::string& file) {
  const Json& clusters = root.at("clusters");
  if (!clusters.is_array()) fail(file, "", field_error("clusters", expected("an array", clusters)));
  ParsedFile parsed;
  std::unordered_map<std::string, std::size_t> ordinal_of;  // external id -> cluster #
  for (std::size_t i = 0; i < clusters.size(); ++i) {
    const Json& entry = clusters[i];
    std::string where = "cluster #" + std::to_string(i + 1);
    if (!entry.is_object()) fail(file, where, expected("an object", entry));
    const auto id_it = entry.find("id");
    if (id_it == entry.end()) {
      fail(file, where, field_error("id", "missing; every cluster needs a string \"id\" such as \"csv_data_source\""));
    }
    ParsedCluster cluster;
    cluster.external_id = required_text(*id_it, "id", file, where);
    where += " (" + json_quoted(cluster.external_id) + ")";
    const auto [seen, inserted] = ordinal_of.emplace(cluster.external_id, i + 1);
    if (!inserted) {
      fail(file, where, "duplicate cluster id, also used by cluster #" + std::to_string(seen->second) +
                            "; merge the two or rename one");
    }
    cluster.where = where;
    cluster.name = optional_string(entry, "name", file, where);
    cluster.description = optional_string(entry, "description", file, where);

    if (const auto answers = entry.find("answers"); answers != entry.end() && !answers->is_null()) {
      if (!answers->is_object()) {
        fail(file, where, field_error("answers", expected("an object such as {\"default\": \"...\"}", *answers)));
      }
      for (const auto& [variant, text] : answers->items()) {
        const std::string field = "answers." + variant;
        if (is_blank(variant)) fail(file, where, field_error(field, "empty variant name; use \"default\""));
        cluster.answers.push_back({required_text(text, field, file, where), variant, where, field});
      }
    }
    if (const auto queries = entry.find("queries"); queries != entry.end() && !queries->is_null()) {
      if (!queries->is_object()) {
        fail(file, where,
             field_error("queries", expected("an object such as {\"short\": [\"...\"]}", *queries)));
      }
      std::unordered_set<std::string> texts;
      for (const auto& [group, list] : queries->items()) {
        const std::string field = "queries." + group;
        if (group == kHeldOutGroup) {
          if (list.is_array()) parsed.held_out += static_cast<std::int64_t>(list.size());
          continue;
        }
        if (group.empty() || !is_known_question_length(group)) {
          fail(file, where, field_error(field, "unknown query group " + json_quoted(group) +
                                                   "; use short, medium or long (\"novel\" holds held-out "
                                                   "queries, which are not imported)"));
        }
        if (!list.is_array()) fail(file, where, field_error(field, expected("an array of strings", list)));
        for (std::size_t k = 0; k < list.size(); ++k) {
          std::string text = required_text(list[k], field + "[" + std::to_string(k) + "]", file, where);
          if (!texts.insert(text).second) {
            ++parsed.duplicate_questions;
            continue;
          }
          cluster.questions.push_back({std::move(text), group});
        }
      }
    }
    if (cluster.questions.empty()) {
      fail(file, where,
           "no questions; field \"queries\" needs at least one non-empty group such as \"short\" "
           "(\"novel\" queries are held out and not imported)");
    }
    if (cluster.answers.empty()) {
      fail(file, where, "no answer; field \"answers\" needs at least {\"default\": \"...\"}");
    }
    parsed.questions += static_cast<std::int64_t>(cluster.questions.size());
    parsed.answers += static_cast<std::int64_t>(cluster.answers.size());
    parsed.clusters.push_back(std::move(cluster));
  }
  return parsed;
}

// `text` is the whole file; `start` skips a byte-order mark. Lines are
// numbered from the start of the file.
ParsedFile parse_json_lines(std::string_view text, std::size_t start, const std::string& file) {
  ParsedFile parsed;
  std::unordered_map<std::string, std::size_t> index_of;
  // Per cluster, the line of each answer variant and of its name/description,
  // to reject a file that says two different things about the same cluster.
  struct SeenLines {
    std::map<std::string, std::size_t> variants;
    std::map<std::string, std::size_t> metadata;
    std::unordered_set<std::string> questions;
  };
  std::vector<SeenLines> seen_per_cluster;
  std::size_t line_number = 0;
  std::size_t position = 0;
  while (position < text.size()) {
    std::size_t end = text.find('\n', position);
    if (end == std::string_view::npos) end = text.size();
    const std::size_t line_begin = line_number == 0 ? std::max(position, start) : position;
    const std::string_view line = text.substr(line_begin, end - line_begin);
    position = end + 1;
    ++line_number;
    if (is_blank(line)) continue;

    const std::string at_line = "line " + std::to_string(line_number);
    Json record;
    try {
      record = parse_json_strict<Json>(line);
    } catch (const DuplicateJsonKey& error) {
      fail(file, at_line + ", column " + std::to_string(error.offset + 1), "invalid JSON: " + std::string(error.what()));
    } catch (const Json::parse_error& error) {
      const std::size_t offset = parse_error_offset(error, line.size());
      fail(file, at_line + ", column " + std::to_string(offset + 1),
           "invalid JSON: " + parse_error_reason(error) + " (JSON Lines needs one complete object per line)");
    } catch (const Json::out_of_range& error) {
      fail(file, at_line + ", column " + std::to_string(number_range_offset(error, line) + 1),
           "invalid JSON: " + number_range_reason(error));
    }
    if (!record.is_object()) fail(file, at_line, expected("a JSON object", record));
    const auto cluster_it = record.find("cluster");
    if (cluster_it == record.end()) {
      fail(file, at_line, field_error("cluster", "missing; every record needs the \"cluster\" id it belongs to"));
    }
    const std::string external_id = required_text(*cluster_it, "cluster", file, at_line);
    const std::string where = at_line + " (cluster " + json_quoted(external_id) + ")";

    auto [found, created] = index_of.emplace(external_id, parsed.clusters.size());
    if (created) {
      ParsedCluster cluster;
      cluster.external_id = external_id;
      cluster.where = where;
      parsed.clusters.push_back(std::move(cluster));
      seen_per_cluster.emplace_back();
    }
    ParsedCluster& cluster = parsed.clusters[found->second];
    auto& seen_lines = seen_per_cluster[found->second];

    const bool has_question = record.contains("question");
    const bool has_answer = record.contains("answer");
    for (const char* key : {"name", "description"}) {
      const std::string value = optional_string(record, key, file, where);
      if (value.empty()) continue;
      std::string& target = std::string_view(key) == "name" ? cluster.name : cluster.description;
      if (!target.empty() && target != value) {
        fail(file, where, field_error(key, "differs from the " + std::string(key) + " given at line " +
                                               std::to_string(seen_lines.metadata[key]) +
                                               "; give one value per cluster"));
      }
      target = value;
      seen_lines.metadata.emplace(key, line_number);
    }
    if (has_question && has_answer) {
      fail(file, where, "a record holds either \"question\" or \"answer\", not both; split it into two lines");
    }
    if (has_question) {
      std::string question = required_text(record.at("question"), "question", file, where);
      std::string length = optional_string(record, "length", file, where);
      if (length == kHeldOutGroup) {
        ++parsed.held_out;
      } else if (!is_known_question_length(length)) {
        fail(file, where, field_error("length", "unknown length " + json_quoted(length) +
                                                    "; use short, medium or long, leave it out, or \"novel\" "
                                                    "for a held-out query (not imported)"));
      } else if (!seen_lines.questions.insert(question).second) {
        ++parsed.duplicate_questions;
      } else {
        cluster.questions.push_back({std::move(question), std::move(length)});
        ++parsed.questions;
      }
    } else if (has_answer) {
      std::string answer = required_text(record.at("answer"), "answer", file, where);
      std::string variant = "default";
      if (const auto it = record.find("variant"); it != record.end() && !it->is_null()) {
        variant = required_text(*it, "variant", file, where);
      }
      const auto [previous, fresh] = seen_lines.variants.emplace(variant, line_number);
      if (!fresh) {
        fail(file, where, field_error("variant", "cluster already has a " + json_quoted(variant) + " answer at line " +
                                                     std::to_string(previous->second) +
                                                     "; give each variant once"));
      }
      cluster.answers.push_back({std::move(answer), std::move(variant), where, "answer"});
      ++parsed.answers;
    } else if (!record.contains("name") && !record.contains("description")) {
      fail(file, where,
           "the record has none of \"question\", \"answer\", \"name\" or \"description\"; "
           "expected {\"cluster\":..., \"question\":...} or {\"cluster\":..., \"answer\":...}");
    }
  }
  return parsed;
}

ParsedFile parse_content(std::string_view bytes, const std::string& file) {
  if (const auto bad = text::first_invalid_utf8(bytes)) {
    const LineColumn at = line_column_at(bytes, *bad);
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned>(static_cast<unsigned char>(bytes[*bad])));
    fail(file, "byte " + std::to_string(*bad) + " (line " + std::to_string(at.line) + ")",
         std::string("invalid UTF-8 (") + hex + "); save the file as UTF-8");
  }
  const std::size_t start = bytes.starts_with("\xEF\xBB\xBF") ? 3 : 0;
  const std::string_view body = bytes.substr(start);
  if (is_blank(body)) {
    fail(file, "", "the file is empty; expected a JSON object with \"clusters\" or JSON Lines records");
  }

  std::optional<Json> whole;
  std::string whole_reason;
  std::size_t whole_offset = 0;
  try {
    whole = parse_json_strict<Json>(body);
  } catch (const DuplicateJsonKey& error) {
    const LineColumn at = line_column_at(bytes, start + error.offset);
    fail(file, "line " + std::to_string(at.line) + ", column " + std::to_string(at.column),
         "invalid JSON: " + std::string(error.what()));
  } catch (const Json::parse_error& error) {
    whole_reason = parse_error_reason(error);
    whole_offset = parse_error_offset(error, body.size());
  } catch (const Json::out_of_range& error) {
    whole_reason = number_range_reason(error);
    whole_offset = number_range_offset(error, body);
  }
  if (whole) {
    if (whole->is_object() && whole->contains("clusters")) return parse_original(*whole, file);
    if (whole->is_object() && whole->contains("cluster")) return parse_json_lines(bytes, start, file);
    fail(file, "",
         "expected a JSON object with a \"clusters\" array (original format) or JSON Lines records with a "
         "\"cluster\" field; got " +
             std::string(whole->is_object() ? "an object with neither" : whole->type_name()));
  }
  // Not one JSON document: JSON Lines if its first record parses on its own.
  const std::size_t first = body.find_first_not_of(" \t\r\n\f\v");
  std::size_t first_end = body.find('\n', first);
  if (first_end == std::string_view::npos) first_end = body.size();
  // A first line holding "clusters" is an original-format file with junk
  // after it: report the document's own syntax error then.
  const std::string_view first_line = body.substr(first, first_end - first);
  if (Json::accept(first_line)) {
    const Json record = Json::parse(first_line);
    if (record.is_object() && !record.contains("clusters")) return parse_json_lines(bytes, start, file);
  }
  const LineColumn at = line_column_at(bytes, start + whole_offset);
  std::string reason = whole_reason;
  if (reason.find("end of input") != std::string::npos) reason += " (is the file truncated?)";
  fail(file, "line " + std::to_string(at.line) + ", column " + std::to_string(at.column), "invalid JSON: " + reason);
}

// A question is (cluster, text), an answer (cluster, variant, text).
using QuestionKey = std::pair<std::int64_t, std::string>;
using AnswerKey = std::tuple<std::int64_t, std::string, std::string>;

struct OwnQuestion {
  std::int64_t id;
  std::string length_type;
};

// Rows of one cluster that other batches (or no batch) brought.
struct OthersRows {
  std::unordered_set<std::string> questions;
  std::map<std::string, std::pair<std::string, std::string>> answers;  // variant -> (text, its file)
};

OthersRows others_rows(sqlite3* db, std::int64_t cluster_id, std::int64_t batch_id) {
  OthersRows rows;
  sqlite::Statement questions(db, "SELECT text FROM questions WHERE cluster_id = ?1 AND batch_id IS NOT ?2");
  questions.bind(1, cluster_id).bind(2, batch_id);
  while (questions.step()) rows.questions.insert(questions.column_text(0));
  sqlite::Statement answers(db,
                            "SELECT a.variant, a.text, coalesce(b.file, '') FROM answers a "
                            "LEFT JOIN import_batches b ON b.id = a.batch_id "
                            "WHERE a.cluster_id = ?1 AND a.batch_id IS NOT ?2 ORDER BY a.id");
  answers.bind(1, cluster_id).bind(2, batch_id);
  while (answers.step()) {
    rows.answers.emplace(answers.column_text(0), std::make_pair(answers.column_text(1), answers.column_text(2)));
  }
  return rows;
}

struct SyncCounts {
  std::int64_t added = 0, removed = 0, changed = 0, duplicate_questions = 0, duplicate_answers = 0;
};

// Makes the batch's rows what the file says: keeps rows whose content is
// unchanged (ids, so embeddings, survive), skips what other batches already
// hold, refuses a conflicting answer, inserts the rest and deletes the
// batch's rows the file no longer has.
SyncCounts sync_rows(sqlite3* db, std::int64_t batch_id, const ParsedFile& parsed,
                     const std::vector<std::int64_t>& cluster_ids, const std::vector<bool>& new_cluster,
                     const std::string& display) {
  SyncCounts counts;
  std::map<QuestionKey, std::vector<OwnQuestion>> own_questions;
  std::map<AnswerKey, std::vector<std::int64_t>> own_answers;
  {
    sqlite::Statement select(db, "SELECT id, cluster_id, text, length_type FROM questions WHERE batch_id = ?1 "
                                 "ORDER BY id DESC");
    select.bind(1, batch_id);
    // Newest first, so pop_back hands out the oldest id and order is kept.
    while (select.step()) {
      own_questions[{select.column_int(1), select.column_text(2)}].push_back(
          {select.column_int(0), select.column_text(3)});
    }
    sqlite::Statement answers(db, "SELECT id, cluster_id, variant, text FROM answers WHERE batch_id = ?1 "
                                  "ORDER BY id DESC");
    answers.bind(1, batch_id);
    while (answers.step()) {
      own_answers[{answers.column_int(1), answers.column_text(2), answers.column_text(3)}].push_back(
          answers.column_int(0));
    }
  }
  sqlite::Statement insert_question(
      db, "INSERT INTO questions(cluster_id, text, length_type, batch_id) VALUES (?1, ?2, ?3, ?4)");
  sqlite::Statement update_length(db, "UPDATE questions SET length_type = ?2 WHERE id = ?1");
  sqlite::Statement insert_answer(
      db, "INSERT INTO answers(cluster_id, text, variant, batch_id) VALUES (?1, ?2, ?3, ?4)");
  for (std::size_t c = 0; c < parsed.clusters.size(); ++c) {
    const ParsedCluster& cluster = parsed.clusters[c];
    const std::int64_t cluster_id = cluster_ids[c];
    const OthersRows others = new_cluster[c] ? OthersRows{} : others_rows(db, cluster_id, batch_id);
    for (const ParsedQuestion& q : cluster.questions) {
      const auto own = own_questions.find({cluster_id, q.text});
      if (own != own_questions.end() && !own->second.empty()) {
        if (own->second.back().length_type != q.length_type) {
          update_length.reset();
          update_length.bind(1, own->second.back().id).bind(2, q.length_type).run();
          ++counts.changed;
        }
        own->second.pop_back();
      } else if (others.questions.count(q.text) > 0) {
        ++counts.duplicate_questions;
      } else {
        insert_question.reset();
        insert_question.bind(1, cluster_id).bind(2, q.text).bind(3, q.length_type).bind(4, batch_id).run();
        ++counts.added;
      }
    }
    for (const ParsedAnswer& a : cluster.answers) {
      const auto own = own_answers.find({cluster_id, a.variant, a.text});
      const auto other = others.answers.find(a.variant);
      if (own != own_answers.end() && !own->second.empty()) {
        own->second.pop_back();
      } else if (other != others.answers.end() && other->second.first == a.text) {
        ++counts.duplicate_answers;
      } else if (other != others.answers.end()) {
        const std::string& source = other->second.second;
        fail(display, a.where,
             field_error(a.field, "cluster " + json_quoted(cluster.external_id) + " already has a different " +
                                      json_quoted(a.variant) + " answer, from " +
                                      (source.empty() ? std::string("rows not imported from a file") : source) +
                                      "; a cluster has one answer per variant: change it in that file and "
                                      "re-import it, or remove this one"));
      } else {
        insert_answer.reset();
        insert_answer.bind(1, cluster_id).bind(2, a.text).bind(3, a.variant).bind(4, batch_id).run();
        ++counts.added;
      }
    }
  }
  sqlite::Statement remove_question(db, "DELETE FROM questions WHERE id = ?1");
  for (const auto& [key, rows] : own_questions) {
    for (const OwnQuestion& row : rows) {
      remove_question.reset();
      remove_question.bind(1, row.id).run();
      ++counts.removed;
    }
  }
  sqlite::Statement remove_answer(db, "DELETE FROM answers WHERE id = ?1");
  for (const auto& [key, ids] : own_answers) {
    for (const std::int64_t id : ids) {
      remove_answer.reset();
      remove_answer.bind(1, id).run();
      ++counts.removed;
    }
  }
  return counts;
}

std::int64_t cluster_rows(sqlite3* db, std::int64_t cluster_id) {
  sqlite::Statement count(db,
                          "SELECT (SELECT count(*) FROM questions WHERE cluster_id = ?1) + "
                          "(SELECT count(*) FROM answers WHERE cluster_id = ?1)");
  count.bind(1, cluster_id);
  count.step();
  return count.column_int(0);
}

}  // namespace

bool is_known_question_length(std::string_view length) {
  return length.empty() || length == "short" || length == "medium" || length == "long";
}

ImportReport import_file(Store& store, const fs::path& file) {
  const std::string display = file.string();
  const std::string bytes = read_whole_file(file);
  ImportReport report;
  report.file = fs::absolute(file).lexically_normal().string();
  report.sha256 = sha256_hex(bytes);
  const ParsedFile parsed = parse_content(bytes, display);
  report.clusters = static_cast<std::int64_t>(parsed.clusters.size());
  report.questions = parsed.questions;
  report.answers = parsed.answers;
  report.held_out = parsed.held_out;
  report.duplicate_questions = parsed.duplicate_questions;

  Store::Impl& impl = store.impl();
  if (impl.read_only) throw Error("importing " + display + ": database " + impl.path.string() + " is read-only");
  sqlite3* db = impl.db;
  sqlite::Transaction transaction(db, sqlite::Transaction::Kind::Write);

  std::int64_t batch_id = 0;
  bool same_content = false;  // this path was imported with these bytes
  {
    sqlite::Statement find(db, "SELECT id, sha256 FROM import_batches WHERE file = ?1");
    find.bind(1, report.file);
    if (find.step()) {
      batch_id = find.column_int(0);
      same_content = find.column_text(1) == report.sha256;
      report.outcome = same_content ? ImportOutcome::Unchanged : ImportOutcome::Updated;
    } else {
      // A copy of an imported file adds nothing: keying batches by path
      // alone would store every question and answer twice.
      sqlite::Statement twin(db, "SELECT file FROM import_batches WHERE sha256 = ?1 ORDER BY id LIMIT 1");
      twin.bind(1, report.sha256);
      if (twin.step()) {
        report.outcome = ImportOutcome::AlreadyImported;
        report.same_as = twin.column_text(0);
        return report;  // the transaction rolls back: nothing was written
      }
    }
  }
  const std::string now = store_detail::utc_now();
  if (report.outcome == ImportOutcome::Updated) {
    sqlite::Statement update(db,
                             "UPDATE import_batches SET sha256 = ?2, status = 'imported', imported_at = ?3 "
                             "WHERE id = ?1");
    update.bind(1, batch_id).bind(2, report.sha256).bind(3, now).run();
  } else if (report.outcome == ImportOutcome::Imported) {
    sqlite::Statement insert(db,
                             "INSERT INTO import_batches(file, sha256, status, imported_at) "
                             "VALUES (?1, ?2, 'imported', ?3)");
    insert.bind(1, report.file).bind(2, report.sha256).bind(3, now).run();
    batch_id = sqlite3_last_insert_rowid(db);
  }

  std::vector<std::int64_t> cluster_ids;
  std::vector<bool> new_cluster;
  cluster_ids.reserve(parsed.clusters.size());
  {
    sqlite::Statement find(db, "SELECT id FROM clusters WHERE external_id = ?1");
    sqlite::Statement insert(db, "INSERT INTO clusters(external_id, name, description) VALUES (?1, ?2, ?3)");
    sqlite::Statement update(db,
                             "UPDATE clusters SET "
                             "name = CASE WHEN ?2 <> '' THEN ?2 ELSE name END, "
                             "description = CASE WHEN ?3 <> '' THEN ?3 ELSE description END "
                             "WHERE id = ?1");
    for (const ParsedCluster& cluster : parsed.clusters) {
      find.reset();
      find.bind(1, cluster.external_id);
      if (find.step()) {
        const std::int64_t id = find.column_int(0);
        cluster_ids.push_back(id);
        new_cluster.push_back(false);
        // Unchanged bytes say nothing new: a name given since by another
        // file stays.
        if (!same_content) {
          update.reset();
          update.bind(1, id).bind(2, cluster.name).bind(3, cluster.description).run();
        }
      } else {
        insert.reset();
        insert.bind(1, cluster.external_id).bind(2, cluster.name).bind(3, cluster.description).run();
        cluster_ids.push_back(sqlite3_last_insert_rowid(db));
        new_cluster.push_back(true);
      }
    }
  }

  const SyncCounts counts = sync_rows(db, batch_id, parsed, cluster_ids, new_cluster, display);
  report.duplicate_questions += counts.duplicate_questions;
  report.duplicate_answers = counts.duplicate_answers;
  report.rows_added = counts.added;
  report.rows_removed = counts.removed;
  if (same_content) {
    // Only rows that another file brought first and has dropped since can be
    // missing; with none, nothing is written.
    if (counts.added + counts.removed + counts.changed == 0) return report;
    report.outcome = ImportOutcome::Updated;
  }

  // A record that only names a cluster must name one that has content.
  for (std::size_t c = 0; c < parsed.clusters.size(); ++c) {
    if (cluster_rows(db, cluster_ids[c]) == 0) {
      fail(display, parsed.clusters[c].where,
           "cluster " + json_quoted(parsed.clusters[c].external_id) +
               " has no questions or answers in this file and none in the database; "
               "import its questions and answers first or remove this record "
               "(\"novel\" questions are held out and not imported)");
    }
  }
  // An update may have taken the last rows of a cluster away.
  sqlite::exec(db,
               "DELETE FROM clusters WHERE NOT EXISTS (SELECT 1 FROM questions q WHERE q.cluster_id = clusters.id) "
               "AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.cluster_id = clusters.id)");
  transaction.commit();
  return report;
}

}  // namespace ldaproj
