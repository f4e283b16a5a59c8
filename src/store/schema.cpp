// Schema migrations for the store. Append new migrations at the end of
// kMigrations and bump kSchemaVersion in include/ldaproj/store.hpp; never edit
// a migration that has shipped.
#include "store/schema.hpp"

#include <array>
#include <string>

#include "ldaproj/error.hpp"
#include "ldaproj/store.hpp"
#include "store/sqlite.hpp"

namespace ldaproj::schema {

namespace {

// Embeddings live in one table per entity kind so that each can reference its
// entity with a real foreign key: deleting a question or answer (e.g. when a
// re-import drops it) removes its vectors through ON DELETE CASCADE.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE import_batches (
  id          INTEGER PRIMARY KEY,
  file        TEXT    NOT NULL UNIQUE,
  sha256      TEXT    NOT NULL,
  status      TEXT    NOT NULL,
  imported_at TEXT    NOT NULL
);

CREATE TABLE clusters (
  id          INTEGER PRIMARY KEY,
  external_id TEXT    NOT NULL UNIQUE,
  name        TEXT    NOT NULL DEFAULT '',
  description TEXT    NOT NULL DEFAULT ''
);

CREATE TABLE questions (
  id          INTEGER PRIMARY KEY,
  cluster_id  INTEGER NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
  text        TEXT    NOT NULL,
  length_type TEXT    NOT NULL DEFAULT '',
  batch_id    INTEGER REFERENCES import_batches(id) ON DELETE CASCADE
);
CREATE INDEX questions_by_cluster ON questions(cluster_id);
CREATE INDEX questions_by_batch   ON questions(batch_id);

CREATE TABLE answers (
  id          INTEGER PRIMARY KEY,
  cluster_id  INTEGER NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
  text        TEXT    NOT NULL,
  variant     TEXT    NOT NULL DEFAULT 'default',
  batch_id    INTEGER REFERENCES import_batches(id) ON DELETE CASCADE
);
CREATE INDEX answers_by_cluster ON answers(cluster_id);
CREATE INDEX answers_by_batch   ON answers(batch_id);

CREATE TABLE embedding_models (
  id   INTEGER PRIMARY KEY,
  name TEXT    NOT NULL UNIQUE,
  dim  INTEGER NOT NULL CHECK (dim > 0)
);

CREATE TABLE question_embeddings (
  model_id    INTEGER NOT NULL REFERENCES embedding_models(id) ON DELETE CASCADE,
  question_id INTEGER NOT NULL REFERENCES questions(id) ON DELETE CASCADE,
  vector      BLOB    NOT NULL,
  PRIMARY KEY (model_id, question_id)
) WITHOUT ROWID;
CREATE INDEX question_embeddings_by_question ON question_embeddings(question_id);

CREATE TABLE answer_embeddings (
  model_id  INTEGER NOT NULL REFERENCES embedding_models(id) ON DELETE CASCADE,
  answer_id INTEGER NOT NULL REFERENCES answers(id) ON DELETE CASCADE,
  vector    BLOB    NOT NULL,
  PRIMARY KEY (model_id, answer_id)
) WITHOUT ROWID;
CREATE INDEX answer_embeddings_by_answer ON answer_embeddings(answer_id);

CREATE TABLE projections (
  id              INTEGER PRIMARY KEY,
  name            TEXT    NOT NULL UNIQUE,
  model_id        INTEGER NOT NULL REFERENCES embedding_models(id) ON DELETE CASCADE,
  temperature     REAL    NOT NULL,
  centroid_method TEXT    NOT NULL,
  metrics_json    TEXT    NOT NULL DEFAULT '{}',
  created_at      TEXT    NOT NULL,
  active          INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1))
);
-- At most one active projection per model.
CREATE UNIQUE INDEX projections_active_per_model ON projections(model_id) WHERE active = 1;

CREATE TABLE projection_heads (
  projection_id INTEGER NOT NULL REFERENCES projections(id) ON DELETE CASCADE,
  cluster_id    INTEGER NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
  centroid      BLOB    NOT NULL,
  answer        BLOB    NOT NULL,
  num_questions INTEGER NOT NULL,
  PRIMARY KEY (projection_id, cluster_id)
) WITHOUT ROWID;
CREATE INDEX projection_heads_by_cluster ON projection_heads(cluster_id);

PRAGMA application_id = 1279545418;
)sql";

// Students distilled from a projection: at most one per projection, removed
// with it (a retrained teacher makes its student stale). Tensors keep their
// module order in `position`.
constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE students (
  id            INTEGER PRIMARY KEY,
  projection_id INTEGER NOT NULL UNIQUE REFERENCES projections(id) ON DELETE CASCADE,
  config_json   TEXT    NOT NULL,
  metrics_json  TEXT    NOT NULL DEFAULT '{}',
  created_at    TEXT    NOT NULL
);

CREATE TABLE student_tensors (
  student_id INTEGER NOT NULL REFERENCES students(id) ON DELETE CASCADE,
  name       TEXT    NOT NULL,
  position   INTEGER NOT NULL,
  shape_json TEXT    NOT NULL,
  data       BLOB    NOT NULL,
  PRIMARY KEY (student_id, name)
) WITHOUT ROWID;
)sql";

// Hierarchical ensembles (per-domain students and a meta-router) trained for
// a projection: at most one per projection, removed with it. The config JSON
// holds the shape and the domain names; tensors as for students.
constexpr const char* kSchemaV3 = R"sql(
CREATE TABLE ensembles (
  id            INTEGER PRIMARY KEY,
  projection_id INTEGER NOT NULL UNIQUE REFERENCES projections(id) ON DELETE CASCADE,
  config_json   TEXT    NOT NULL,
  metrics_json  TEXT    NOT NULL DEFAULT '{}',
  created_at    TEXT    NOT NULL
);

CREATE TABLE ensemble_tensors (
  ensemble_id INTEGER NOT NULL REFERENCES ensembles(id) ON DELETE CASCADE,
  name        TEXT    NOT NULL,
  position    INTEGER NOT NULL,
  shape_json  TEXT    NOT NULL,
  data        BLOB    NOT NULL,
  PRIMARY KEY (ensemble_id, name)
) WITHOUT ROWID;
)sql";

// Named tensors of a projection beyond one key and one answer per head:
// several sub-keys per head and a query adapter (train --keys-per-head,
// --query-adapter). A projection without any routes as before.
constexpr const char* kSchemaV4 = R"sql(
CREATE TABLE projection_tensors (
  projection_id INTEGER NOT NULL REFERENCES projections(id) ON DELETE CASCADE,
  name          TEXT    NOT NULL,
  position      INTEGER NOT NULL,
  shape_json    TEXT    NOT NULL,
  data          BLOB    NOT NULL,
  PRIMARY KEY (projection_id, name)
) WITHOUT ROWID;
)sql";

constexpr std::array kMigrations{
    Migration{1, "initial schema", kSchemaV1},
    Migration{2, "distilled students", kSchemaV2},
    Migration{3, "hierarchical ensembles", kSchemaV3},
    Migration{4, "projection sub-keys and query adapters", kSchemaV4},
};

static_assert(kMigrations.back().version == kSchemaVersion,
              "the last migration must bring the database to kSchemaVersion");
static_assert(kApplicationId == 1279545418, "keep the PRAGMA in kSchemaV1 in sync");

bool is_empty_database(sqlite3* db) {
  sqlite::Statement count(db, "SELECT count(*) FROM sqlite_master");
  count.step();
  return count.column_int(0) == 0;
}

}  // namespace

std::span<const Migration> migrations() { return kMigrations; }

int user_version(sqlite3* db) {
  sqlite::Statement pragma(db, "PRAGMA user_version");
  pragma.step();
  return static_cast<int>(pragma.column_int(0));
}

std::int32_t application_id(sqlite3* db) {
  sqlite::Statement pragma(db, "PRAGMA application_id");
  pragma.step();
  return static_cast<std::int32_t>(pragma.column_int(0));
}

void check_compatible(sqlite3* db, const std::filesystem::path& path) {
  const std::int32_t app = application_id(db);
  const int version = user_version(db);
  if (app == 0 && version == 0) {
    if (is_empty_database(db)) return;
    throw InputError(path.string() + " is an SQLite database of another program (it has tables but no "
                     "ldaproj schema); give --db a new file name");
  }
  if (app != kApplicationId) {
    throw InputError(path.string() + " is an SQLite database of another program (application id " +
                     std::to_string(app) + "); give --db a new file name");
  }
  if (version > kSchemaVersion) {
    throw InputError("database " + path.string() + " has schema version " + std::to_string(version) +
                     ", this ldaproj supports up to " + std::to_string(kSchemaVersion) +
                     "; upgrade ldaproj");
  }
}

int migrate(sqlite3* db, const std::filesystem::path& path) {
  // Up to date: no write lock needed (a writer elsewhere must not block opens).
  if (user_version(db) >= kMigrations.back().version) return 0;
  int applied = 0;
  for (const Migration& migration : kMigrations) {
    sqlite::Transaction transaction(db, sqlite::Transaction::Kind::Write);
    // Re-read under the write lock: another process may have migrated since.
    check_compatible(db, path);
    if (user_version(db) >= migration.version) continue;
    try {
      sqlite::exec(db, migration.sql);
    } catch (const Error& e) {
      throw Error("migrating " + path.string() + " to schema version " + std::to_string(migration.version) +
                  " (" + migration.description + ") failed: " + e.what());
    }
    sqlite::exec(db, "PRAGMA user_version = " + std::to_string(migration.version));
    transaction.commit();
    ++applied;
  }
  return applied;
}

}  // namespace ldaproj::schema
