// The SQLite store (include/ldaproj/store.hpp): opening and migrating the
// database, clusters/questions/answers reads, embedding models and vectors,
// projections with their heads, distilled students, import batches and
// statistics. Imports are written by src/store/importer.cpp.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <limits>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "ldaproj/error.hpp"
#include "ldaproj/store.hpp"
#include "store/schema.hpp"
#include "store/sqlite.hpp"
#include "store/store_impl.hpp"

namespace ldaproj {

namespace fs = std::filesystem;
using sqlite::Statement;
using sqlite::Transaction;

Store::Impl::~Impl() {
  // close_v2 defers the close if a statement is somehow still alive instead of
  // failing; every Statement is RAII so in practice this closes at once.
  if (db != nullptr) sqlite3_close_v2(db);
}

namespace store_detail {

// Dimensions beyond this are certainly a bug and would overflow BLOB sizes.
constexpr std::size_t kMaxDim = std::size_t{1} << 20;

std::vector<unsigned char> encode_floats(std::span<const float> values) {
  std::vector<unsigned char> bytes(values.size() * sizeof(float));
  for (std::size_t i = 0; i < values.size(); ++i) {
    auto word = std::bit_cast<std::uint32_t>(values[i]);
    for (int b = 0; b < 4; ++b) bytes[i * 4 + static_cast<std::size_t>(b)] = static_cast<unsigned char>(word >> (8 * b));
  }
  return bytes;
}

void decode_floats(std::span<const unsigned char> blob, std::size_t dim, float* out, const std::string& what) {
  if (blob.size() != dim * sizeof(float)) {
    throw Error(what + " has " + std::to_string(blob.size()) + " bytes, expected " +
                std::to_string(dim * sizeof(float)) + " (" + std::to_string(dim) +
                " float32 values); the database is inconsistent: re-run `ldaproj embed` / `ldaproj train`");
  }
  for (std::size_t i = 0; i < dim; ++i) {
    std::uint32_t word = 0;
    for (int b = 0; b < 4; ++b) word |= std::uint32_t{blob[i * 4 + static_cast<std::size_t>(b)]} << (8 * b);
    out[i] = std::bit_cast<float>(word);
  }
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  gmtime_r(&now, &parts);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text;
}

}  // namespace store_detail

namespace {

using store_detail::decode_floats;
using store_detail::encode_floats;

constexpr int kBusyTimeoutMs = 5000;

struct KindTables {
  const char* entities;    // "questions"
  const char* embeddings;  // "question_embeddings"
  const char* id_column;   // "question_id"
  const char* singular;    // "question"
};

KindTables tables_for(EntityKind kind) {
  if (kind == EntityKind::Question) return {"questions", "question_embeddings", "question_id", "question"};
  return {"answers", "answer_embeddings", "answer_id", "answer"};
}

void configure_connection(sqlite3* db) {
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
}

// The first statement on a connection is where SQLite notices a file that is
// not a database; turn that into a message naming the file.
void check_compatible_or_explain(sqlite3* db, const fs::path& path) {
  try {
    schema::check_compatible(db, path);
  } catch (const InputError&) {
    if ((sqlite3_extended_errcode(db) & 0xff) == SQLITE_NOTADB) {
      throw InputError(path.string() + " is not an SQLite database (" + sqlite3_errmsg(db) +
                       "); give --db an ldaproj database or a new file name");
    }
    throw;
  }
}

void open_connection(Store::Impl& impl, int flags) {
  const int rc = sqlite3_open_v2(impl.path.c_str(), &impl.db, flags, nullptr);
  if (rc != SQLITE_OK) {
    const std::string detail = impl.db ? sqlite3_errmsg(impl.db) : sqlite3_errstr(rc);
    throw InputError("cannot open database " + impl.path.string() + ": " + detail +
                     "; check that its directory exists and is accessible");
  }
  configure_connection(impl.db);
}

fs::path directory_of(const fs::path& path) {
  return path.has_parent_path() ? path.parent_path() : fs::path(".");
}

// access(2) says "no" for want of permission or on a read-only file system;
// other failures (a missing directory) are left to SQLite to report.
bool denied(const fs::path& path) {
  if (::access(path.c_str(), W_OK) == 0) return false;
  return errno == EACCES || errno == EPERM || errno == EROFS;
}

// Why this user cannot write the database at `path` (or create it), or "".
std::string why_not_writable(const fs::path& path) {
  std::error_code ec;
  if (fs::exists(path, ec) && denied(path)) return "no write permission on the file";
  const fs::path dir = directory_of(path);
  if (denied(dir)) {
    return "no write permission on its directory " + dir.string() +
           " (SQLite keeps the -wal and -shm files next to the database)";
  }
  return {};
}

// A file: URI for `path` with every byte that could be read as URI syntax escaped.
std::string file_uri(const fs::path& path, const char* query) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string uri = "file:";
  for (const unsigned char c : path.string()) {
    if (std::isalnum(c) || c == '/' || c == '.' || c == '-' || c == '_' || c == '~') {
      uri.push_back(static_cast<char>(c));
    } else {
      uri.push_back('%');
      uri.push_back(kHex[c >> 4]);
      uri.push_back(kHex[c & 0xf]);
    }
  }
  return uri + "?" + query;
}

void require_writable(const Store::Impl& impl, const char* operation) {
  if (impl.read_only) {
    throw Error(std::string(operation) + ": database " + impl.path.string() + " was opened read-only");
  }
}

struct ModelRow {
  std::string name;
  std::size_t dim = 0;
};

ModelRow model_by_id(sqlite3* db, std::int64_t model_id, const fs::path& path) {
  Statement select(db, "SELECT name, dim FROM embedding_models WHERE id = ?1");
  select.bind(1, model_id);
  if (!select.step()) {
    throw Error("no embedding model with id " + std::to_string(model_id) + " in " + path.string());
  }
  return {select.column_text(0), static_cast<std::size_t>(select.column_int(1))};
}

// Keys the store itself keeps in a metrics object (no schema change needed):
// a projection's "fingerprint", a student's or ensemble's "teacher_fingerprint"
// and "forced_import". They are split out into fields when read.
constexpr const char* kFingerprintKey = "fingerprint";
constexpr const char* kTeacherFingerprintKey = "teacher_fingerprint";
constexpr const char* kForcedKey = "forced_import";

// Removes `key` from the metrics object in `metrics_json` and returns its value.
std::optional<nlohmann::json> take_metric(std::string& metrics_json, const char* key) {
  nlohmann::json metrics = nlohmann::json::parse(metrics_json, nullptr, false);
  if (!metrics.is_object() || !metrics.contains(key)) return std::nullopt;
  nlohmann::json value = metrics[key];
  metrics.erase(key);
  metrics_json = metrics.dump();
  return value;
}

std::optional<Fingerprint> take_fingerprint(std::string& metrics_json, const char* key) {
  const auto value = take_metric(metrics_json, key);
  if (!value || !value->is_object()) return std::nullopt;
  try {
    return Fingerprint::from_json(value->dump(), "stored metrics");
  } catch (const InputError&) {
    return std::nullopt;  // damaged or from another version: as if it had none
  }
}

// `metrics_json` with the store's own keys set (or removed when absent).
std::string with_fingerprint(const std::string& metrics_json, const char* key, const std::optional<Fingerprint>& f,
                             bool forced) {
  nlohmann::json metrics = nlohmann::json::parse(metrics_json.empty() ? "{}" : metrics_json);
  metrics.erase(key);
  metrics.erase(kForcedKey);
  if (f) metrics[key] = nlohmann::json::parse(f->to_json());
  if (forced) metrics[kForcedKey] = true;
  return metrics.dump();
}

constexpr const char* kProjectionColumns =
    "SELECT p.id, p.name, m.name, p.temperature, p.centroid_method, p.metrics_json, p.created_at, p.active, "
    "(SELECT count(*) FROM projection_heads h WHERE h.projection_id = p.id) "
    "FROM projections p JOIN embedding_models m ON m.id = p.model_id ";

Projection projection_from_row(const Statement& row) {
  Projection p;
  p.id = row.column_int(0);
  p.name = row.column_text(1);
  p.model = row.column_text(2);
  p.temperature = static_cast<float>(row.column_double(3));
  p.centroid_method = row.column_text(4);
  p.metrics_json = row.column_text(5);
  p.created_at = row.column_text(6);
  p.active = row.column_int(7) != 0;
  p.head_count = static_cast<std::size_t>(row.column_int(8));
  p.fingerprint = take_fingerprint(p.metrics_json, kFingerprintKey);
  return p;
}

std::unordered_map<std::int64_t, std::string> external_ids(sqlite3* db) {
  Statement select(db, "SELECT id, external_id FROM clusters");
  std::unordered_map<std::int64_t, std::string> ids;
  while (select.step()) ids.emplace(select.column_int(0), select.column_text(1));
  return ids;
}

// How a student's or ensemble's recorded teacher relates to its projection's fingerprint.
Provenance provenance_of(const std::optional<Fingerprint>& teacher, bool forced,
                         const std::optional<Fingerprint>& projection) {
  Provenance p;
  p.forced = forced;
  if (!teacher) {
    p.detail = forced ? "imported with --force from a file without a teacher fingerprint"
                      : "stored before ldaproj kept teacher fingerprints";
  } else if (!projection) {
    p.detail = "its projection has no fingerprint";
  } else if (const std::string diff = describe_difference(*teacher, *projection); !diff.empty()) {
    p.teacher = TeacherMatch::Differs;
    p.detail = "distilled from another teacher" +
               (teacher->projection.empty() ? std::string() : " (projection \"" + teacher->projection + "\")") +
               ": " + diff;
  } else {
    p.teacher = TeacherMatch::Matches;
  }
  return p;
}

std::vector<Projection> read_projections(sqlite3* db) {
  Statement select(db, std::string(kProjectionColumns) + "ORDER BY p.id");
  std::vector<Projection> result;
  while (select.step()) result.push_back(projection_from_row(select));
  return result;
}

constexpr const char* kStudentColumns =
    "SELECT s.id, p.name, s.config_json, s.metrics_json, s.created_at "
    "FROM students s JOIN projections p ON p.id = s.projection_id ";

StoredStudent student_from_row(const Statement& row, const fs::path& path) {
  StoredStudent s;
  s.id = row.column_int(0);
  s.projection = row.column_text(1);
  s.weights.config = StudentConfig::from_json(row.column_text(2), "the student of projection \"" + s.projection +
                                                                      "\" in " + path.string());
  s.metrics_json = row.column_text(3);
  s.created_at = row.column_text(4);
  s.teacher_fingerprint = take_fingerprint(s.metrics_json, kTeacherFingerprintKey);
  s.forced = take_metric(s.metrics_json, kForcedKey).value_or(false) == true;
  return s;
}

std::vector<StoredStudent> read_students(sqlite3* db, const fs::path& path) {
  Statement select(db, std::string(kStudentColumns) + "ORDER BY s.id");
  std::vector<StoredStudent> result;
  while (select.step()) result.push_back(student_from_row(select, path));
  return result;
}

// A projection's extra tensors (Projection::tensors): known names, shapes
// that fit its heads and model, finite values, sub-keys with a head each.
void check_projection_tensors(const Projection& projection, std::size_t dim) {
  const std::string what = "projection \"" + projection.name + "\"";
  const StudentTensor* sub_keys = nullptr;
  const StudentTensor* sub_key_heads = nullptr;
  for (std::size_t i = 1; i < projection.heads.size() && !projection.tensors.empty(); ++i) {
    if (projection.heads[i - 1].cluster_id >= projection.heads[i].cluster_id) {
      throw InputError(what + ": heads must be ordered by cluster id when it has sub-keys or an adapter");
    }
  }
  for (const StudentTensor& t : projection.tensors) {
    std::size_t count = 1;
    for (const auto d : t.shape) count *= static_cast<std::size_t>(std::max<std::int64_t>(d, 0));
    if (count != t.values.size()) throw InputError(what + ": tensor '" + t.name + "' does not match its shape");
    for (const float v : t.values) {
      if (!std::isfinite(v)) throw InputError(what + ": tensor '" + t.name + "' is not finite");
    }
    if (t.name == "sub_keys" && t.shape.size() == 2 && t.shape[1] == static_cast<std::int64_t>(dim)) {
      sub_keys = &t;
    } else if (t.name == "sub_key_heads" && t.shape.size() == 1) {
      sub_key_heads = &t;
    } else if (t.name == "query_adapter" &&
               t.shape == std::vector<std::int64_t>{static_cast<std::int64_t>(dim), static_cast<std::int64_t>(dim)}) {
    } else {
      throw InputError(what + ": unknown tensor '" + t.name + "' or wrong shape for it (model dimension " +
                       std::to_string(dim) + ")");
    }
  }
  if (!sub_keys != !sub_key_heads ||
      (sub_keys && sub_key_heads->values.size() != static_cast<std::size_t>(sub_keys->shape[0]))) {
    throw InputError(what + ": sub_keys and sub_key_heads come together, one head per sub-key");
  }
  if (sub_keys) {
    std::vector<bool> covered(projection.heads.size(), false);
    for (const float h : sub_key_heads->values) {
      if (!(h >= 0) || h != std::floor(h) || h >= static_cast<float>(projection.heads.size())) {
        throw InputError(what + ": a sub-key names head " + std::to_string(h) + " of " +
                         std::to_string(projection.heads.size()));
      }
      covered[static_cast<std::size_t>(h)] = true;
    }
    if (std::find(covered.begin(), covered.end(), false) != covered.end()) {
      throw InputError(what + ": every head needs at least one sub-key");
    }
  }
}

// Named float tensors of a student or ensemble: rows of `table` keyed by
// (`owner` column = owner_id, name), in their order (`position`).
void insert_tensors(sqlite3* db, const std::string& table, const std::string& owner, std::int64_t owner_id,
                    const std::vector<StudentTensor>& tensors) {
  Statement insert(db, "INSERT INTO " + table + "(" + owner + ", name, position, shape_json, data) "
                       "VALUES (?1, ?2, ?3, ?4, ?5)");
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const StudentTensor& t = tensors[i];
    insert.reset();
    insert.bind(1, owner_id)
        .bind(2, t.name)
        .bind(3, static_cast<std::int64_t>(i))
        .bind(4, nlohmann::json(t.shape).dump())
        .bind_blob(5, encode_floats(t.values))
        .run();
  }
}

// The tensors insert_tensors wrote; `what` names their owner and `remedy`
// says how to rebuild it when a row is malformed.
std::vector<StudentTensor> read_tensors(sqlite3* db, const std::string& table, const std::string& owner,
                                        std::int64_t owner_id, const std::string& what, const std::string& remedy) {
  Statement select(db, "SELECT name, shape_json, data FROM " + table + " WHERE " + owner + " = ?1 ORDER BY position");
  select.bind(1, owner_id);
  std::vector<StudentTensor> tensors;
  while (select.step()) {
    StudentTensor t;
    t.name = select.column_text(0);
    std::size_t count = 1;
    try {
      t.shape = nlohmann::json::parse(select.column_text(1)).get<std::vector<std::int64_t>>();
    } catch (const nlohmann::json::exception&) {
      throw Error(what + ": tensor '" + t.name + "' has a malformed shape; " + remedy);
    }
    for (const auto dim : t.shape) count *= static_cast<std::size_t>(std::max<std::int64_t>(dim, 0));
    t.values.resize(count);
    decode_floats(select.column_blob(2), count, t.values.data(), what + ", tensor '" + t.name + "'");
    tensors.push_back(std::move(t));
  }
  return tensors;
}

constexpr const char* kEnsembleColumns =
    "SELECT e.id, p.name, e.config_json, e.metrics_json, e.created_at "
    "FROM ensembles e JOIN projections p ON p.id = e.projection_id ";

StoredEnsemble ensemble_from_row(const Statement& row) {
  StoredEnsemble e;
  e.id = row.column_int(0);
  e.projection = row.column_text(1);
  e.config_json = row.column_text(2);
  e.metrics_json = row.column_text(3);
  e.created_at = row.column_text(4);
  e.teacher_fingerprint = take_fingerprint(e.metrics_json, kTeacherFingerprintKey);
  e.forced = take_metric(e.metrics_json, kForcedKey).value_or(false) == true;
  return e;
}

std::vector<StoredEnsemble> read_ensembles(sqlite3* db) {
  Statement select(db, std::string(kEnsembleColumns) + "ORDER BY e.id");
  std::vector<StoredEnsemble> result;
  while (select.step()) result.push_back(ensemble_from_row(select));
  return result;
}

std::int64_t count_rows(sqlite3* db, const char* table) {
  Statement count(db, std::string("SELECT count(*) FROM ") + table);
  count.step();
  return count.column_int(0);
}

void check_finite(std::span<const float> values, const std::string& what) {
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw InputError(what + " has a non-finite value (" + std::to_string(values[i]) + ") at component " +
                       std::to_string(i) + "; nothing was stored");
    }
  }
}

// Every comparison is by cosine, which a zero vector does not have.
void check_nonzero(std::span<const float> values, const std::string& what) {
  if (std::all_of(values.begin(), values.end(), [](float v) { return v == 0.0f; })) {
    throw InputError(what + " is a zero vector, which has no direction to compare by cosine; nothing was "
                            "stored (is the encoder's output broken?)");
  }
}

}  // namespace

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;
Store::~Store() = default;

Store::Impl& Store::impl() const { return *impl_; }

const fs::path& Store::path() const { return impl_->path; }

Store Store::open(const fs::path& db_path) {
  std::error_code ec;
  if (fs::is_directory(db_path, ec)) {
    throw InputError(db_path.string() + " is a directory; give --db a database file name");
  }
  if (fs::exists(db_path, ec) && !fs::is_regular_file(db_path, ec)) {
    throw InputError(db_path.string() + " is not a regular file (a device, pipe or socket); give --db a "
                     "database file name");
  }
  if (const std::string why = why_not_writable(db_path); !why.empty()) {
    if (!fs::exists(db_path, ec)) {
      throw InputError("cannot create database " + db_path.string() + ": " + why +
                       "; give --db a path in a writable directory");
    }
    throw InputError("database " + db_path.string() + " is read-only for this user: " + why +
                     ". import, embed and train write to it: grant write access (chmod u+w) or copy the "
                     "database to a writable place; query, validate and stats can read it as it is");
  }
  auto impl = std::make_unique<Impl>();
  impl->path = db_path;
  open_connection(*impl, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  check_compatible_or_explain(impl->db, db_path);
  sqlite::exec(impl->db, "PRAGMA foreign_keys = ON");
  // WAL lets readers (search) run while a writer (import, embed) works.
  sqlite::exec(impl->db, "PRAGMA journal_mode = WAL");
  sqlite::exec(impl->db, "PRAGMA synchronous = NORMAL");
  schema::migrate(impl->db, db_path);
  return Store(std::move(impl));
}

Store Store::open_read_only(const fs::path& db_path) {
  std::error_code ec;
  if (fs::is_directory(db_path, ec)) {
    throw InputError(db_path.string() + " is a directory, not a database; give --db the database file");
  }
  if (fs::exists(db_path, ec) && !fs::is_regular_file(db_path, ec)) {
    throw InputError(db_path.string() + " is not a regular file (a device, pipe or socket), so not a database; "
                     "give --db the database file");
  }
  if (!fs::is_regular_file(db_path, ec)) {
    throw InputError("no database at " + db_path.string() + "; create one with `ldaproj import --db " +
                     db_path.string() + " FILE`");
  }
  auto impl = std::make_unique<Impl>();
  impl->path = db_path;
  impl->read_only = true;
  // A WAL database needs its -shm file, which SQLite cannot create in a
  // directory this user may not write. Without -shm and -wal files no
  // connection has the database open (the last one to close removes them),
  // so it is read as an immutable file then.
  const fs::path wal = db_path.string() + "-wal", shm = db_path.string() + "-shm";
  if (denied(directory_of(db_path)) && !fs::exists(shm, ec)) {
    if (fs::exists(wal, ec) && fs::file_size(wal, ec) > 0) {
      throw InputError("database " + db_path.string() + " has a write-ahead log (" + wal.string() +
                       ") that must be merged, but its directory is not writable for this user; run "
                       "`ldaproj stats --db " + db_path.string() + "` once as a user who can write there");
    }
    const int rc = sqlite3_open_v2(file_uri(db_path, "immutable=1").c_str(), &impl->db,
                                   SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr);
    if (rc != SQLITE_OK) {
      throw InputError("cannot open database " + db_path.string() + ": " +
                       (impl->db ? sqlite3_errmsg(impl->db) : sqlite3_errstr(rc)));
    }
    configure_connection(impl->db);
  } else {
    open_connection(*impl, SQLITE_OPEN_READONLY);
  }
  check_compatible_or_explain(impl->db, db_path);
  const int version = schema::user_version(impl->db);
  if (version < kSchemaVersion) {
    throw InputError("database " + db_path.string() + " has schema version " + std::to_string(version) +
                     ", older than this ldaproj's " + std::to_string(kSchemaVersion) +
                     "; open it once read-write (e.g. `ldaproj import`) to migrate it");
  }
  sqlite::exec(impl->db, "PRAGMA foreign_keys = ON");
  return Store(std::move(impl));
}

Store Store::open_for_reading(const fs::path& db_path) {
  std::error_code ec;
  if (fs::is_regular_file(db_path, ec) && why_not_writable(db_path).empty()) return open(db_path);
  return open_read_only(db_path);
}

Store::ReadSnapshot::ReadSnapshot(const Store& store) {
  sqlite3* db = store.impl().db;
  if (sqlite3_get_autocommit(db) == 0) return;  // inside a snapshot already: share it
  sqlite::exec(db, "BEGIN");
  store_ = &store;
  // A deferred transaction takes its snapshot at its first read: take it now.
  try {
    Statement first_read(db, "SELECT count(*) FROM sqlite_master");
    first_read.step();
  } catch (...) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

Store::ReadSnapshot::ReadSnapshot(ReadSnapshot&& other) noexcept : store_(std::exchange(other.store_, nullptr)) {}

Store::ReadSnapshot::~ReadSnapshot() {
  // Ending a read-only transaction cannot lose data; an error here (the
  // connection already rolled back) leaves nothing to do.
  if (store_ != nullptr) sqlite3_exec(store_->impl().db, "COMMIT", nullptr, nullptr, nullptr);
}

Store::ReadSnapshot Store::read_snapshot() const { return ReadSnapshot(*this); }

std::vector<Cluster> Store::clusters() const {
  Statement select(impl_->db, "SELECT id, external_id, name, description FROM clusters ORDER BY id");
  std::vector<Cluster> result;
  while (select.step()) {
    result.push_back({select.column_int(0), select.column_text(1), select.column_text(2), select.column_text(3)});
  }
  return result;
}

std::vector<Question> Store::questions() const {
  Statement select(impl_->db, "SELECT id, cluster_id, text, length_type FROM questions ORDER BY id");
  std::vector<Question> result;
  while (select.step()) {
    result.push_back({select.column_int(0), select.column_int(1), select.column_text(2), select.column_text(3)});
  }
  return result;
}

std::vector<Answer> Store::answers() const {
  Statement select(impl_->db, "SELECT id, cluster_id, text, variant FROM answers ORDER BY id");
  std::vector<Answer> result;
  while (select.step()) {
    result.push_back({select.column_int(0), select.column_int(1), select.column_text(2), select.column_text(3)});
  }
  return result;
}

std::int64_t Store::ensure_model(const std::string& name, std::size_t dim) {
  require_writable(*impl_, "registering an embedding model");
  if (name.empty()) throw InputError("an embedding model needs a non-empty name");
  if (dim == 0 || dim > store_detail::kMaxDim) {
    throw InputError("embedding model \"" + name + "\": dimension " + std::to_string(dim) +
                     " is out of range (1.." + std::to_string(store_detail::kMaxDim) + ")");
  }
  Transaction transaction(impl_->db, Transaction::Kind::Write);
  Statement select(impl_->db, "SELECT id, dim FROM embedding_models WHERE name = ?1");
  select.bind(1, name);
  if (select.step()) {
    const auto stored_dim = static_cast<std::size_t>(select.column_int(1));
    if (stored_dim != dim) {
      throw InputError("embedding model \"" + name + "\" is stored in " + impl_->path.string() +
                       " with dimension " + std::to_string(stored_dim) + ", got " + std::to_string(dim) +
                       "; use another model name or a new database");
    }
    return select.column_int(0);
  }
  Statement insert(impl_->db, "INSERT INTO embedding_models(name, dim) VALUES (?1, ?2)");
  insert.bind(1, name).bind(2, static_cast<std::int64_t>(dim)).run();
  const std::int64_t id = sqlite3_last_insert_rowid(impl_->db);
  transaction.commit();
  return id;
}

std::optional<EmbeddingModel> Store::find_model(const std::string& name) const {
  Statement select(impl_->db, "SELECT id, name, dim FROM embedding_models WHERE name = ?1");
  select.bind(1, name);
  if (!select.step()) return std::nullopt;
  return EmbeddingModel{select.column_int(0), select.column_text(1), static_cast<std::size_t>(select.column_int(2))};
}

std::vector<PendingText> Store::missing_embeddings(std::int64_t model_id, EntityKind kind) const {
  model_by_id(impl_->db, model_id, impl_->path);
  const KindTables t = tables_for(kind);
  Statement select(impl_->db, std::string("SELECT e.id, e.text FROM ") + t.entities +
                                  " e WHERE NOT EXISTS (SELECT 1 FROM " + t.embeddings +
                                  " v WHERE v.model_id = ?1 AND v." + t.id_column +
                                  " = e.id) ORDER BY e.id");
  select.bind(1, model_id);
  std::vector<PendingText> result;
  while (select.step()) result.push_back({select.column_int(0), select.column_text(1)});
  return result;
}

void Store::put_embeddings(std::int64_t model_id, EntityKind kind, const std::vector<std::int64_t>& ids,
                           const Matrix& vectors) {
  require_writable(*impl_, "storing embeddings");
  const ModelRow model = model_by_id(impl_->db, model_id, impl_->path);
  const KindTables t = tables_for(kind);
  if (ids.size() != vectors.rows) {
    throw InputError("storing " + std::string(t.singular) + " embeddings: " + std::to_string(ids.size()) +
                     " ids for " + std::to_string(vectors.rows) + " vectors");
  }
  if (vectors.data.size() != vectors.rows * vectors.cols) {
    throw Error("storing embeddings: matrix data size does not match its shape");
  }
  if (!ids.empty() && vectors.cols != model.dim) {
    throw InputError("embeddings for model \"" + model.name + "\" must have dimension " +
                     std::to_string(model.dim) + ", got " + std::to_string(vectors.cols));
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::string what = std::string(t.singular) + " " + std::to_string(ids[i]) + "'s \"" + model.name +
                             "\" embedding";
    check_finite(vectors.row_span(i), what);
    check_nonzero(vectors.row_span(i), what);
  }
  if (ids.empty()) return;

  Transaction transaction(impl_->db, Transaction::Kind::Write);
  Statement upsert(impl_->db, std::string("INSERT INTO ") + t.embeddings + "(model_id, " + t.id_column +
                                  ", vector) VALUES (?1, ?2, ?3) ON CONFLICT(model_id, " + t.id_column +
                                  ") DO UPDATE SET vector = excluded.vector");
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto blob = encode_floats(vectors.row_span(i));
    upsert.reset();
    upsert.bind(1, model_id).bind(2, ids[i]).bind_blob(3, blob);
    try {
      upsert.run();
    } catch (const Error&) {
      if (sqlite3_extended_errcode(impl_->db) == SQLITE_CONSTRAINT_FOREIGNKEY) {
        throw InputError(std::string(t.singular) + " " + std::to_string(ids[i]) + " does not exist in " +
                         impl_->path.string() +
                         " (removed by a re-import?); nothing was stored, run `ldaproj embed` again");
      }
      throw;
    }
  }
  transaction.commit();
}

EmbeddingSet Store::embeddings(std::int64_t model_id, EntityKind kind) const {
  const KindTables t = tables_for(kind);
  Transaction snapshot(impl_->db, Transaction::Kind::Read);
  const ModelRow model = model_by_id(impl_->db, model_id, impl_->path);
  Statement select(impl_->db, std::string("SELECT ") + t.id_column + ", vector FROM " + t.embeddings +
                                  " WHERE model_id = ?1 ORDER BY " + t.id_column);
  select.bind(1, model_id);
  EmbeddingSet set;
  set.vectors.cols = model.dim;
  while (select.step()) {
    const std::int64_t id = select.column_int(0);
    set.ids.push_back(id);
    set.vectors.data.resize(set.vectors.data.size() + model.dim);
    decode_floats(select.column_blob(1), model.dim, set.vectors.data.data() + set.vectors.rows * model.dim,
                  "the \"" + model.name + "\" embedding of " + t.singular + " " + std::to_string(id));
    ++set.vectors.rows;
  }
  snapshot.commit();
  return set;
}

std::int64_t Store::save_projection(const Projection& projection) {
  return save_projection_as(projection, ExistingProjection::Replace).id;
}

SavedProjection Store::save_projection_as(const Projection& projection, ExistingProjection existing) {
  require_writable(*impl_, "saving a projection");
  if (projection.name.empty()) throw InputError("a projection needs a non-empty name");
  const auto model = find_model(projection.model);
  if (!model) {
    throw InputError("projection \"" + projection.name + "\" refers to embedding model \"" + projection.model +
                     "\", which is not in " + impl_->path.string() + "; run `ldaproj embed` first");
  }
  if (!std::isfinite(projection.temperature) || !(projection.temperature > 0.0f)) {
    throw InputError("projection \"" + projection.name + "\": temperature must be a positive number, got " +
                     std::to_string(projection.temperature));
  }
  const std::string given_metrics = projection.metrics_json.empty() ? "{}" : projection.metrics_json;
  if (!nlohmann::json::accept(given_metrics) || !nlohmann::json::parse(given_metrics).is_object()) {
    throw InputError("projection \"" + projection.name + "\": metrics must be a JSON object");
  }
  for (const Head& head : projection.heads) {
    const std::string what = "projection \"" + projection.name + "\", head of cluster " +
                             std::to_string(head.cluster_id);
    if (head.centroid.size() != model->dim || head.answer.size() != model->dim) {
      throw InputError(what + ": centroid has " + std::to_string(head.centroid.size()) + " and answer " +
                       std::to_string(head.answer.size()) + " values, the model \"" + model->name +
                       "\" has dimension " + std::to_string(model->dim));
    }
    check_finite(head.centroid, what + ": centroid");
    check_finite(head.answer, what + ": answer");
    check_nonzero(head.centroid, what + ": centroid");
    check_nonzero(head.answer, what + ": answer");
  }

  check_projection_tensors(projection, model->dim);

  sqlite3* db = impl_->db;
  Transaction transaction(db, Transaction::Kind::Write);
  SavedProjection saved;
  saved.name = projection.name;
  const auto holdings = [db](const std::string& name) {
    Statement select(db,
                     "SELECT p.id, EXISTS(SELECT 1 FROM students s WHERE s.projection_id = p.id), "
                     "EXISTS(SELECT 1 FROM ensembles e WHERE e.projection_id = p.id) FROM projections p "
                     "WHERE p.name = ?1");
    select.bind(1, name);
    std::optional<std::pair<bool, bool>> found;
    if (select.step()) found = std::make_pair(select.column_int(1) != 0, select.column_int(2) != 0);
    return found;
  };
  if (existing == ExistingProjection::NextFree) {
    for (int n = 2; holdings(saved.name); ++n) saved.name = projection.name + "-" + std::to_string(n);
  } else if (const auto held = holdings(projection.name)) {
    if (existing == ExistingProjection::Refuse) {
      const std::string holds = held->first && held->second ? "its student and ensemble"
                                : held->first               ? "its student"
                                : held->second              ? "its ensemble"
                                                            : "";
      throw InputError("a projection named \"" + projection.name + "\" already exists in " + impl_->path.string() +
                       (holds.empty() ? "" : " with " + holds) +
                       "; give another --name, or --replace to replace it" +
                       (holds.empty() ? "" : " (dropping " + holds + ")") + "; nothing was saved");
    }
    saved.replaced = true;
    saved.dropped_student = held->first;
    saved.dropped_ensemble = held->second;
  }
  {
    Statement active(db, "SELECT name FROM projections WHERE model_id = ?1 AND active = 1 AND name != ?2");
    active.bind(1, model->id).bind(2, saved.name);
    if (active.step()) saved.previously_active = active.column_text(0);
  }
  // The fingerprint names clusters by external id, read in this transaction.
  const auto ids = external_ids(db);
  for (const Head& head : projection.heads) {
    if (!ids.count(head.cluster_id)) {
      throw InputError("projection \"" + projection.name + "\": cluster " + std::to_string(head.cluster_id) +
                       " does not exist in " + impl_->path.string() + "; nothing was saved");
    }
  }
  Projection named = projection;
  named.name = saved.name;
  const std::string metrics =
      with_fingerprint(given_metrics, kFingerprintKey, fingerprint_of(named, model->dim, ids), false);
  Statement remove(db, "DELETE FROM projections WHERE name = ?1");
  remove.bind(1, saved.name).run();
  Statement deactivate(db, "UPDATE projections SET active = 0 WHERE model_id = ?1 AND active = 1");
  deactivate.bind(1, model->id).run();
  Statement insert(db,
                   "INSERT INTO projections(name, model_id, temperature, centroid_method, metrics_json, "
                   "created_at, active) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)");
  insert.bind(1, saved.name)
      .bind(2, model->id)
      .bind(3, static_cast<double>(projection.temperature))
      .bind(4, projection.centroid_method)
      .bind(5, metrics)
      .bind(6, projection.created_at.empty() ? store_detail::utc_now() : projection.created_at)
      .run();
  const std::int64_t projection_id = sqlite3_last_insert_rowid(db);
  Statement insert_head(db,
                        "INSERT INTO projection_heads(projection_id, cluster_id, centroid, answer, num_questions) "
                        "VALUES (?1, ?2, ?3, ?4, ?5)");
  for (const Head& head : projection.heads) {
    insert_head.reset();
    insert_head.bind(1, projection_id)
        .bind(2, head.cluster_id)
        .bind_blob(3, encode_floats(head.centroid))
        .bind_blob(4, encode_floats(head.answer))
        .bind(5, head.num_questions);
    try {
      insert_head.run();
    } catch (const Error&) {
      const int code = sqlite3_extended_errcode(db);
      if (code == SQLITE_CONSTRAINT_FOREIGNKEY) {
        throw InputError("projection \"" + projection.name + "\": cluster " + std::to_string(head.cluster_id) +
                         " does not exist in " + impl_->path.string() + "; nothing was saved");
      }
      if (code == SQLITE_CONSTRAINT_PRIMARYKEY) {
        throw InputError("projection \"" + projection.name + "\" has two heads for cluster " +
                         std::to_string(head.cluster_id) + "; nothing was saved");
      }
      throw;
    }
  }
  insert_tensors(db, "projection_tensors", "projection_id", projection_id, projection.tensors);
  transaction.commit();
  saved.id = projection_id;
  return saved;
}

namespace {

std::string list_names(const std::vector<Projection>& all);  // below, with the projection commands

// The projection of that name in `all`; InputError listing them otherwise.
std::vector<Projection>::const_iterator find_named(const std::vector<Projection>& all, const std::string& name,
                                                   const fs::path& db_path) {
  const auto it = std::find_if(all.begin(), all.end(), [&](const Projection& p) { return p.name == name; });
  if (it == all.end()) {
    throw InputError("no projection named \"" + name + "\" in " + db_path.string() + "; " + list_names(all));
  }
  return it;
}

// The named projection's row, or the most recently saved active one when no
// name is given; call inside a transaction.
std::optional<Projection> select_projection_row(sqlite3* db, const std::string& name) {
  Statement select(db, std::string(kProjectionColumns) +
                           (name.empty() ? "WHERE p.active = 1 ORDER BY p.id DESC LIMIT 1" : "WHERE p.name = ?1"));
  if (!name.empty()) select.bind(1, name);
  if (!select.step()) return std::nullopt;
  return projection_from_row(select);
}

}  // namespace

std::optional<Projection> Store::load_projection(const std::string& name) const {
  sqlite3* db = impl_->db;
  Transaction snapshot(db, Transaction::Kind::Read);
  std::optional<Projection> row = select_projection_row(db, name);
  if (!row) return std::nullopt;
  Projection projection = std::move(*row);
  const auto model = find_model(projection.model);
  const std::size_t dim = model ? model->dim : 0;

  Statement heads(db,
                  "SELECT cluster_id, centroid, answer, num_questions FROM projection_heads "
                  "WHERE projection_id = ?1 ORDER BY cluster_id");
  heads.bind(1, projection.id);
  while (heads.step()) {
    Head head;
    head.cluster_id = heads.column_int(0);
    head.centroid.resize(dim);
    head.answer.resize(dim);
    const std::string what = "projection \"" + projection.name + "\", head of cluster " +
                             std::to_string(head.cluster_id);
    decode_floats(heads.column_blob(1), dim, head.centroid.data(), what + ": centroid");
    decode_floats(heads.column_blob(2), dim, head.answer.data(), what + ": answer");
    head.num_questions = heads.column_int(3);
    projection.heads.push_back(std::move(head));
  }
  projection.tensors = read_tensors(db, "projection_tensors", "projection_id", projection.id,
                                    "projection \"" + projection.name + "\"", "train it again with `ldaproj train`");
  // Trained before fingerprints: computed from what is stored, as
  // save_projection would have.
  if (!projection.fingerprint && model) projection.fingerprint = fingerprint_of(projection, dim, external_ids(db));
  snapshot.commit();
  return projection;
}

std::vector<Projection> Store::projections() const { return read_projections(impl_->db); }

std::optional<Fingerprint> Store::projection_fingerprint(const std::string& name) const {
  sqlite3* db = impl_->db;
  Transaction snapshot(db, Transaction::Kind::Read);
  std::optional<Projection> row = select_projection_row(db, name);
  if (!row) return std::nullopt;
  std::optional<Fingerprint> fingerprint =
      row->fingerprint ? std::move(row->fingerprint) : load_projection(row->name)->fingerprint;
  snapshot.commit();
  return fingerprint;
}

namespace {

// "a", "b" (active), ... for messages that must say what exists.
std::string list_names(const std::vector<Projection>& projections) {
  if (projections.empty()) return "there are none; train one with `ldaproj train`";
  std::string out = "it has ";
  for (std::size_t i = 0; i < projections.size(); ++i) {
    out += (i ? ", \"" : "\"") + projections[i].name + "\"" + (projections[i].active ? " (active)" : "");
  }
  return out;
}

}  // namespace

void Store::save_reject_threshold(const std::string& projection, float threshold, const std::string& chosen_on) {
  require_writable(*impl_, "saving a rejection threshold");
  if (!std::isfinite(threshold)) throw InputError("a rejection threshold must be a finite number");
  sqlite3* db = impl_->db;
  Transaction transaction(db, Transaction::Kind::Write);
  const std::vector<Projection> all = read_projections(db);
  const auto it = find_named(all, projection, impl_->path);
  const nlohmann::json value{{"value", threshold}, {"chosen_on", chosen_on}, {"saved_at", store_detail::utc_now()}};
  Statement update(db, "UPDATE projections SET metrics_json = json_set(metrics_json, '$.reject_below', json(?1)) "
                       "WHERE id = ?2");
  update.bind(1, value.dump()).bind(2, it->id).run();
  transaction.commit();
}

std::optional<float> stored_reject_threshold(const std::string& metrics_json) {
  const nlohmann::json metrics = nlohmann::json::parse(metrics_json, nullptr, false);
  if (!metrics.is_object() || !metrics.contains("reject_below")) return std::nullopt;
  const nlohmann::json& stored = metrics["reject_below"];
  if (!stored.is_object() || !stored.contains("value") || !stored["value"].is_number()) return std::nullopt;
  const float v = stored["value"].get<float>();
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::string Store::activate_projection(const std::string& name) {
  require_writable(*impl_, "activating a projection");
  sqlite3* db = impl_->db;
  Transaction transaction(db, Transaction::Kind::Write);
  const std::vector<Projection> all = read_projections(db);
  const auto it = find_named(all, name, impl_->path);
  std::string before;
  for (auto p = all.rbegin(); p != all.rend() && before.empty(); ++p)
    if (p->active) before = p->name;
  // One active projection in the whole store: the default of every command is
  // the newest active one, so another model's would otherwise still win.
  sqlite::exec(db, "UPDATE projections SET active = 0 WHERE active = 1");
  Statement activate(db, "UPDATE projections SET active = 1 WHERE id = ?1");
  activate.bind(1, it->id).run();
  transaction.commit();
  return before;
}

DeletedProjection Store::delete_projection(const std::string& name, const std::string& activate, bool force) {
  require_writable(*impl_, "deleting a projection");
  sqlite3* db = impl_->db;
  Transaction transaction(db, Transaction::Kind::Write);
  const std::vector<Projection> all = read_projections(db);
  const auto find = [&](const std::string& n) {
    return std::find_if(all.begin(), all.end(), [&](const Projection& p) { return p.name == n; });
  };
  const auto victim = find_named(all, name, impl_->path);
  DeletedProjection out;
  out.name = name;
  Statement holds(db,
                  "SELECT EXISTS(SELECT 1 FROM students WHERE projection_id = ?1), "
                  "EXISTS(SELECT 1 FROM ensembles WHERE projection_id = ?1)");
  holds.bind(1, victim->id);
  holds.step();
  out.had_student = holds.column_int(0) != 0;
  out.had_ensemble = holds.column_int(1) != 0;
  std::int64_t replacement = 0;
  if (!activate.empty()) {
    const auto next = find(activate);
    if (next == all.end() || next == victim) {
      throw InputError("--activate \"" + activate + "\": " +
                       (next == victim ? std::string("that is the projection being deleted")
                                       : "no such projection in " + impl_->path.string() + "; " + list_names(all)) +
                       "; nothing was deleted");
    }
    replacement = next->id;
    out.activated = next->name;
  } else if (victim->active) {
    // The newest other projection: the one a user would most likely fall back to.
    const auto newest = std::find_if(all.rbegin(), all.rend(), [&](const Projection& p) { return p.id != victim->id; });
    if (!force) {
      throw InputError("projection \"" + name + "\" is the active one; name the projection to activate instead with "
                       "--activate NAME" +
                       (newest == all.rend() ? std::string(" (there is no other)")
                                             : " (e.g. --activate " + newest->name + ")") +
                       ", or give --force to delete it anyway" +
                       (newest == all.rend() ? std::string(" (leaving the store without a projection)")
                                             : " and activate \"" + newest->name + "\"") +
                       "; nothing was deleted");
    }
    if (newest != all.rend()) {
      replacement = newest->id;
      out.activated = newest->name;
    }
  }
  Statement remove(db, "DELETE FROM projections WHERE id = ?1");
  remove.bind(1, victim->id).run();
  if (replacement != 0) {
    sqlite::exec(db, "UPDATE projections SET active = 0 WHERE active = 1");
    Statement make_active(db, "UPDATE projections SET active = 1 WHERE id = ?1");
    make_active.bind(1, replacement).run();
  }
  transaction.commit();
  return out;
}

namespace {

// Provenance of students or ensembles (as read) against their projections'
// fingerprints, each projection's read once.
template <typename Stored>
void fill_provenance(const Store& store, std::vector<Stored>& items) {
  std::map<std::string, std::optional<Fingerprint>> projections;
  for (Stored& item : items) {
    std::optional<Fingerprint> none;
    const std::optional<Fingerprint>* own = &none;
    if (item.teacher_fingerprint) {
      auto it = projections.find(item.projection);
      if (it == projections.end()) it = projections.emplace(item.projection, store.projection_fingerprint(item.projection)).first;
      own = &it->second;
    }
    item.provenance = provenance_of(item.teacher_fingerprint, item.forced, *own);
  }
}

// The teacher fingerprint to store with a student or ensemble of projection
// `name`: the one given when it is the projection's own (or forced), the
// projection's when none is given. InputError naming both when they differ.
std::optional<Fingerprint> checked_teacher_of(const Store& store, const std::string& what,
                                              const std::optional<Fingerprint>& teacher, bool forced,
                                              const std::string& name) {
  if (forced) return teacher;
  const std::optional<Fingerprint> own = store.projection_fingerprint(name);
  if (!teacher) return own;
  if (own && teacher->id != own->id) {
    throw InputError(what + " was distilled from another teacher" +
                     (teacher->projection.empty() ? std::string() : " (projection \"" + teacher->projection + "\")") +
                     " than projection \"" + name + "\" in " + store.path().string() + ": " +
                     describe_difference(*teacher, *own) + "; nothing was stored (distil it from this projection, or "
                     "import it with --force to keep it anyway, marked as foreign)");
  }
  return teacher;
}

// A projection saved before fingerprints gets its computed one stored with
// its first student or ensemble, so that later reads need no pass over its heads.
void keep_fingerprint(const Store& store, std::int64_t projection_id, const std::string& name) {
  sqlite3* db = store.impl().db;
  Statement select(db, "SELECT metrics_json FROM projections WHERE id = ?1");
  select.bind(1, projection_id);
  if (!select.step()) return;
  std::string metrics = select.column_text(0);
  std::string probe = metrics;
  if (take_fingerprint(probe, kFingerprintKey)) return;
  const std::optional<Fingerprint> computed = store.projection_fingerprint(name);
  if (!computed) return;
  Statement update(db, "UPDATE projections SET metrics_json = ?2 WHERE id = ?1");
  update.bind(1, projection_id).bind(2, with_fingerprint(metrics, kFingerprintKey, computed, false)).run();
}

}  // namespace

std::int64_t Store::save_student(const StoredStudent& student) {
  require_writable(*impl_, "saving a student");
  const std::string what = "the student of projection \"" + student.projection + "\"";
  student.weights.validate(what);
  const std::string metrics = student.metrics_json.empty() ? "{}" : student.metrics_json;
  if (!nlohmann::json::accept(metrics) || !nlohmann::json::parse(metrics).is_object()) {
    throw InputError(what + ": metrics must be a JSON object");
  }
  sqlite3* db = impl_->db;
  Transaction transaction(db, Transaction::Kind::Write);
  Statement find(db,
                 "SELECT p.id, m.dim, m.name FROM projections p JOIN embedding_models m ON m.id = p.model_id "
                 "WHERE p.name = ?1");
  find.bind(1, student.projection);
  if (!find.step()) {
    throw InputError(what + ": there is no projection \"" + student.projection + "\" in " + impl_->path.string() +
                     "; train it first (`ldaproj train`) or name another with --projection");
  }
  const std::int64_t projection_id = find.column_int(0);
  const auto dim = static_cast<std::size_t>(find.column_int(1));
  if (student.weights.config.dim != dim) {
    throw InputError(what + " has dimension " + std::to_string(student.weights.config.dim) + ", the projection's model \"" +
                     find.column_text(2) + "\" has " + std::to_string(dim) + "; nothing was stored");
  }
  const std::string stored_metrics = with_fingerprint(
      metrics, kTeacherFingerprintKey, checked_teacher_of(*this, what, student.teacher_fingerprint, student.forced, student.projection),
      student.forced);
  keep_fingerprint(*this, projection_id, student.projection);
  Statement remove(db, "DELETE FROM students WHERE projection_id = ?1");
  remove.bind(1, projection_id).run();
  Statement insert(db,
                   "INSERT INTO students(projection_id, config_json, metrics_json, created_at) "
                   "VALUES (?1, ?2, ?3, ?4)");
  insert.bind(1, projection_id)
      .bind(2, student.weights.config.to_json())
      .bind(3, stored_metrics)
      .bind(4, student.created_at.empty() ? store_detail::utc_now() : student.created_at)
      .run();
  const std::int64_t student_id = sqlite3_last_insert_rowid(db);
  insert_tensors(db, "student_tensors", "student_id", student_id, student.weights.tensors);
  transaction.commit();
  return student_id;
}

std::optional<StoredStudent> Store::load_student(const std::string& projection_name) const {
  sqlite3* db = impl_->db;
  Transaction snapshot(db, Transaction::Kind::Read);
  Statement select(db, std::string(kStudentColumns) +
                           (projection_name.empty() ? "WHERE p.active = 1 ORDER BY p.id DESC LIMIT 1"
                                                    : "WHERE p.name = ?1"));
  if (!projection_name.empty()) select.bind(1, projection_name);
  if (!select.step()) return std::nullopt;
  StoredStudent student = student_from_row(select, impl_->path);
  const std::string what = "the student of projection \"" + student.projection + "\"";
  student.weights.tensors =
      read_tensors(db, "student_tensors", "student_id", student.id, what, "distil again with `ldaproj distill`");
  std::vector<StoredStudent> one(1);
  std::swap(one[0], student);
  fill_provenance(*this, one);
  std::swap(one[0], student);
  snapshot.commit();
  try {
    student.weights.validate(what + " in " + impl_->path.string());
  } catch (const InputError& e) {
    throw Error(std::string(e.what()) + "; the database is inconsistent: distil again with `ldaproj distill`");
  }
  return student;
}

std::vector<StoredStudent> Store::students() const {
  Transaction snapshot(impl_->db, Transaction::Kind::Read);
  std::vector<StoredStudent> students = read_students(impl_->db, impl_->path);
  fill_provenance(*this, students);
  snapshot.commit();
  return students;
}

std::int64_t Store::save_ensemble(const StoredEnsemble& ensemble) {
  require_writable(*impl_, "saving an ensemble");
  const std::string what = "the ensemble of projection \"" + ensemble.projection + "\"";
  const std::string metrics = ensemble.metrics_json.empty() ? "{}" : ensemble.metrics_json;
  for (const std::string* json : {&ensemble.config_json, &metrics}) {
    if (!nlohmann::json::accept(*json) || !nlohmann::json::parse(*json).is_object()) {
      throw InputError(what + ": its config and metrics must be JSON objects; nothing was stored");
    }
  }
  std::set<std::string> names;
  for (const StudentTensor& t : ensemble.tensors) {
    std::size_t count = 1;
    for (const auto d : t.shape) {
      if (d < 0) throw InputError(what + ": tensor '" + t.name + "' has a negative dimension; nothing was stored");
      count *= static_cast<std::size_t>(d);
    }
    if (t.name.empty() || !names.insert(t.name).second || count != t.values.size()) {
      throw InputError(what + ": tensor '" + t.name + "' is unnamed, repeated or does not match its shape; nothing was stored");
    }
    for (const float v : t.values) {
      if (!std::isfinite(v)) throw InputError(what + ": tensor '" + t.name + "' is not finite; nothing was stored");
    }
  }
  sqlite3* db = impl_->db;
  Transaction transaction(db, Transaction::Kind::Write);
  Statement find(db, "SELECT id FROM projections WHERE name = ?1");
  find.bind(1, ensemble.projection);
  if (!find.step()) {
    throw InputError(what + ": there is no projection \"" + ensemble.projection + "\" in " + impl_->path.string() +
                     "; train it first (`ldaproj train`)");
  }
  const std::int64_t projection_id = find.column_int(0);
  const std::string stored_metrics =
      with_fingerprint(metrics, kTeacherFingerprintKey,
                       checked_teacher_of(*this, what, ensemble.teacher_fingerprint, ensemble.forced, ensemble.projection),
                       ensemble.forced);
  keep_fingerprint(*this, projection_id, ensemble.projection);
  Statement remove(db, "DELETE FROM ensembles WHERE projection_id = ?1");
  remove.bind(1, projection_id).run();
  Statement insert(db,
                   "INSERT INTO ensembles(projection_id, config_json, metrics_json, created_at) "
                   "VALUES (?1, ?2, ?3, ?4)");
  insert.bind(1, projection_id)
      .bind(2, ensemble.config_json)
      .bind(3, stored_metrics)
      .bind(4, ensemble.created_at.empty() ? store_detail::utc_now() : ensemble.created_at)
      .run();
  const std::int64_t ensemble_id = sqlite3_last_insert_rowid(db);
  insert_tensors(db, "ensemble_tensors", "ensemble_id", ensemble_id, ensemble.tensors);
  transaction.commit();
  return ensemble_id;
}

std::optional<StoredEnsemble> Store::load_ensemble(const std::string& projection_name) const {
  sqlite3* db = impl_->db;
  Transaction snapshot(db, Transaction::Kind::Read);
  Statement select(db, std::string(kEnsembleColumns) +
                           (projection_name.empty() ? "WHERE p.active = 1 ORDER BY p.id DESC LIMIT 1"
                                                    : "WHERE p.name = ?1"));
  if (!projection_name.empty()) select.bind(1, projection_name);
  if (!select.step()) return std::nullopt;
  StoredEnsemble ensemble = ensemble_from_row(select);
  const std::string what = "the ensemble of projection \"" + ensemble.projection + "\"";
  ensemble.tensors = read_tensors(db, "ensemble_tensors", "ensemble_id", ensemble.id, what,
                                  "train it again with `ldaproj ensemble`");
  std::vector<StoredEnsemble> one(1);
  std::swap(one[0], ensemble);
  fill_provenance(*this, one);
  std::swap(one[0], ensemble);
  snapshot.commit();
  return ensemble;
}

std::vector<StoredEnsemble> Store::ensembles() const {
  Transaction snapshot(impl_->db, Transaction::Kind::Read);
  std::vector<StoredEnsemble> ensembles = read_ensembles(impl_->db);
  fill_provenance(*this, ensembles);
  snapshot.commit();
  return ensembles;
}

std::vector<ImportBatch> Store::batches() const {
  Statement select(impl_->db, "SELECT id, file, sha256, status, imported_at FROM import_batches ORDER BY id");
  std::vector<ImportBatch> result;
  while (select.step()) {
    result.push_back({select.column_int(0), select.column_text(1), select.column_text(2), select.column_text(3),
                      select.column_text(4)});
  }
  return result;
}

void Store::backup_to(const fs::path& destination) const {
  std::error_code ec;
  if (fs::exists(destination, ec) || fs::is_symlink(destination, ec)) {
    throw InputError(destination.string() + " exists; give the backup a new file name (it never overwrites)");
  }
  const fs::path dir = directory_of(destination);
  if (!fs::is_directory(dir, ec)) {
    throw InputError("cannot write the backup " + destination.string() + ": directory " + dir.string() +
                     " does not exist");
  }
  if (denied(dir)) {
    throw InputError("cannot write the backup " + destination.string() + ": no write permission on " + dir.string());
  }
  // Built under a private name and linked into place, so a failed or
  // interrupted backup never leaves a partial file under the real name.
  const fs::path partial = destination.string() + ".partial-" + std::to_string(::getpid());
  fs::remove(partial, ec);
  try {
    // VACUUM INTO reads one snapshot through this connection, WAL included:
    // unlike copying the file, commits still in the -wal file are kept.
    Statement vacuum(impl_->db, "VACUUM INTO ?1");
    vacuum.bind(1, partial.string()).run();
    sqlite3* copy = nullptr;
    const int rc = sqlite3_open_v2(partial.c_str(), &copy, SQLITE_OPEN_READONLY, nullptr);
    std::string check;
    if (rc == SQLITE_OK) {
      try {
        Statement quick(copy, "PRAGMA quick_check");
        if (quick.step()) check = quick.column_text(0);
      } catch (const Error& e) {
        check = e.what();
      }
    }
    sqlite3_close_v2(copy);
    if (check != "ok") throw Error("the backup " + partial.string() + " does not check out: " + check);
    // On disk before it gets its name, so a crash cannot leave a torn backup.
    if (const int fd = ::open(partial.c_str(), O_RDONLY); fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
    // link() fails if the name appeared meanwhile, where rename() would overwrite.
    if (::link(partial.c_str(), destination.c_str()) != 0) {
      const int error = errno;
      const bool no_links = error == EPERM || error == EOPNOTSUPP || error == EMLINK;
      if (!no_links || fs::exists(destination, ec)) {
        throw Error("cannot create " + destination.string() + ": " + std::strerror(error));
      }
      fs::rename(partial, destination);
    }
    fs::remove(partial, ec);
  } catch (...) {
    fs::remove(partial, ec);
    throw;
  }
}

StoreStats Store::stats() const {
  sqlite3* db = impl_->db;
  Transaction snapshot(db, Transaction::Kind::Read);
  StoreStats stats;
  stats.clusters = count_rows(db, "clusters");
  stats.questions = count_rows(db, "questions");
  stats.answers = count_rows(db, "answers");
  stats.batches = count_rows(db, "import_batches");
  Statement per_model(db,
                      "SELECT m.name, "
                      "(SELECT count(*) FROM question_embeddings q WHERE q.model_id = m.id) + "
                      "(SELECT count(*) FROM answer_embeddings a WHERE a.model_id = m.id) "
                      "FROM embedding_models m ORDER BY m.name");
  while (per_model.step()) stats.embeddings_per_model.emplace_back(per_model.column_text(0), per_model.column_int(1));
  stats.projections = read_projections(db);
  stats.students = read_students(db, impl_->path);
  fill_provenance(*this, stats.students);
  stats.ensembles = read_ensembles(db);
  fill_provenance(*this, stats.ensembles);
  stats.schema_version = schema::user_version(db);
  snapshot.commit();
  return stats;
}

Staleness Store::staleness(const std::string& projection_name) const {
  sqlite3* db = impl_->db;
  Transaction snapshot(db, Transaction::Kind::Read);
  Staleness out;
  std::int64_t model_id = 0, projection_id = 0;
  std::string metrics;
  {
    Statement select(db, "SELECT p.id, p.name, p.model_id, m.name, p.metrics_json FROM projections p "
                         "JOIN embedding_models m ON m.id = p.model_id " +
                             std::string(projection_name.empty() ? "WHERE p.active = 1 ORDER BY p.id DESC LIMIT 1"
                                                                 : "WHERE p.name = ?1"));
    if (!projection_name.empty()) select.bind(1, projection_name);
    if (select.step()) {
      projection_id = select.column_int(0);
      out.projection = select.column_text(1);
      model_id = select.column_int(2);
      out.model = select.column_text(3);
      metrics = select.column_text(4);
    } else {
      Statement first(db, "SELECT id, name FROM embedding_models ORDER BY id LIMIT 1");
      if (first.step()) {
        model_id = first.column_int(0);
        out.model = first.column_text(1);
      }
    }
  }
  // Embeddings go with their rows (ON DELETE CASCADE), so the difference of
  // two counts is the number of texts without one.
  auto count = [db](const std::string& sql, std::int64_t a = 0, std::int64_t b = 0, std::int64_t c = 0) {
    Statement statement(db, sql);
    if (sql.find("?1") != std::string::npos) statement.bind(1, a);
    if (sql.find("?2") != std::string::npos) statement.bind(2, b);
    if (sql.find("?3") != std::string::npos) statement.bind(3, c);
    statement.step();
    return statement.column_int(0);
  };
  out.questions_without_embedding =
      count_rows(db, "questions") - count("SELECT count(*) FROM question_embeddings WHERE model_id = ?1", model_id);
  out.answers_without_embedding =
      count_rows(db, "answers") - count("SELECT count(*) FROM answer_embeddings WHERE model_id = ?1", model_id);
  if (projection_id == 0) {
    snapshot.commit();
    return out;
  }
  // train skips a cluster without questions or without an answer.
  out.clusters_without_head = count(
      "SELECT count(*) FROM clusters c WHERE NOT EXISTS (SELECT 1 FROM projection_heads h "
      "WHERE h.projection_id = ?1 AND h.cluster_id = c.id) "
      "AND EXISTS (SELECT 1 FROM questions q WHERE q.cluster_id = c.id) "
      "AND EXISTS (SELECT 1 FROM answers a WHERE a.cluster_id = c.id)",
      projection_id);
  // A new or re-worded row gets an id above the largest one training saw
  // (the importer inserts before it deletes); a removed question changes
  // the head's question count.
  std::int64_t last_question = std::numeric_limits<std::int64_t>::max();
  std::int64_t last_answer = std::numeric_limits<std::int64_t>::max();
  const nlohmann::json parsed = nlohmann::json::parse(metrics, nullptr, false);
  if (parsed.is_object() && parsed.contains("trained_on") && parsed["trained_on"].is_object()) {
    const nlohmann::json& on = parsed["trained_on"];
    if (on.contains("last_question_id") && on["last_question_id"].is_number_integer()) {
      last_question = on["last_question_id"].get<std::int64_t>();
    }
    if (on.contains("last_answer_id") && on["last_answer_id"].is_number_integer()) {
      last_answer = on["last_answer_id"].get<std::int64_t>();
    }
  }
  out.clusters_changed = count(
      "SELECT count(*) FROM projection_heads h WHERE h.projection_id = ?1 AND ("
      "h.num_questions <> (SELECT count(*) FROM questions q WHERE q.cluster_id = h.cluster_id) "
      "OR EXISTS (SELECT 1 FROM questions q WHERE q.cluster_id = h.cluster_id AND q.id > ?2) "
      "OR EXISTS (SELECT 1 FROM answers a WHERE a.cluster_id = h.cluster_id AND a.id > ?3))",
      projection_id, last_question, last_answer);
  snapshot.commit();
  return out;
}

std::vector<std::string> describe_staleness(const Staleness& s, const std::string& db_path) {
  std::vector<std::string> lines;
  auto plural = [](std::int64_t n, const char* one, const char* many) {
    return std::to_string(n) + " " + (n == 1 ? one : many);
  };
  const std::string embed = "`ldaproj embed --db " + db_path + "`";
  const std::string train = "`ldaproj train --db " + db_path + "`";
  const std::int64_t texts = s.questions_without_embedding + s.answers_without_embedding;
  if (texts > 0) {
    std::string what;
    if (s.questions_without_embedding > 0) what = plural(s.questions_without_embedding, "question", "questions");
    if (s.answers_without_embedding > 0) {
      what += (what.empty() ? "" : " and ") + plural(s.answers_without_embedding, "answer", "answers");
    }
    lines.push_back(what + (texts == 1 ? " has" : " have") + " no " +
                    (s.model.empty() ? std::string("embedding yet") : "\"" + s.model + "\" embedding") +
                    (s.answers_without_embedding > 0 ? " (a cluster whose answer has none is left out of results)"
                                                     : "") +
                    ": run " + embed + (s.projection.empty() ? "" : ", then " + train));
  }
  if (s.clusters_without_head > 0) {
    lines.push_back(plural(s.clusters_without_head, "cluster has", "clusters have") + " no head in projection \"" +
                    s.projection + "\" (imported after it was trained), so routing cannot reach " +
                    (s.clusters_without_head == 1 ? "it" : "them") + ": run " + train);
  }
  if (s.clusters_changed > 0) {
    lines.push_back(plural(s.clusters_changed, "cluster's", "clusters'") +
                    " questions or answers changed after projection \"" + s.projection +
                    "\" was trained (its heads hold the old ones): run " + train);
  }
  return lines;
}

}  // namespace ldaproj
