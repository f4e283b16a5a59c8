// The SQLite store: clusters, questions, answers, embedding models,
// embeddings, multi-head projections with their heads, the students distilled
// from them, and import batches.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ldaproj/fingerprint.hpp"
#include "ldaproj/matrix.hpp"
#include "ldaproj/student.hpp"

namespace ldaproj {

inline constexpr int kSchemaVersion = 4;

struct Cluster {
  std::int64_t id = 0;
  std::string external_id;  // e.g. "csv_data_source"
  std::string name;
  std::string description;
};

struct Question {
  std::int64_t id = 0;
  std::int64_t cluster_id = 0;
  std::string text;
  std::string length_type;  // "short", "medium", "long" or "" when unknown
};

struct Answer {
  std::int64_t id = 0;
  std::int64_t cluster_id = 0;
  std::string text;
  std::string variant;  // "default" or an embedding model's name
};

struct EmbeddingModel {
  std::int64_t id = 0;
  std::string name;
  std::size_t dim = 0;
};

enum class EntityKind { Question, Answer };

// Texts that have no embedding yet for a model, in id order.
struct PendingText {
  std::int64_t id = 0;
  std::string text;
};

// Embeddings of one kind for one model: ids[i] is the entity of vectors.row(i).
struct EmbeddingSet {
  std::vector<std::int64_t> ids;
  Matrix vectors;
};

struct Head {
  std::int64_t cluster_id = 0;
  std::vector<float> centroid;  // unit length
  std::vector<float> answer;    // unit length
  std::int64_t num_questions = 0;
};

struct Projection {
  std::int64_t id = 0;
  std::string name;
  std::string model;  // embedding model name
  float temperature = 0.1f;
  std::string centroid_method;  // "mean" or "reweighted"
  std::string metrics_json;     // free-form JSON object, "{}" when none
  std::string created_at;       // ISO-8601 UTC
  bool active = false;
  std::size_t head_count = 0;   // filled by projections() and load_projection
  // What it was trained from; computed by save_projection (anything set here
  // is ignored). load_projection computes it for projections stored before
  // fingerprints; projections() leaves it empty for those.
  std::optional<Fingerprint> fingerprint;
  std::vector<Head> heads;      // filled by load_projection only
  // Routing beyond one key per head (filled by load_projection only; empty
  // for most projections): "sub_keys" [keys, dim] with "sub_key_heads" [keys]
  // (the position in `heads` of each key's head, `heads` ordered by cluster
  // id), which then replace the centroids as keys, and "query_adapter"
  // [dim, dim] (ldaproj/teacher.hpp adapt_queries).
  std::vector<StudentTensor> tensors;
};

// A student distilled from a projection (at most one per projection).
struct StoredStudent {
  std::int64_t id = 0;
  std::string projection;       // name of the projection it is stored with
  StudentWeights weights;       // tensors empty when listed by students()
  std::string metrics_json;     // free-form JSON object, "{}" when none
  std::string created_at;       // ISO-8601 UTC
  // The fingerprint of the teacher it was distilled from. save_student
  // refuses one that differs from the projection's unless `forced`; left
  // empty (and not forced), the caller vouches that it is the projection's own
  // and the projection's fingerprint is stored.
  std::optional<Fingerprint> teacher_fingerprint;
  bool forced = false;          // stored against a different or unknown teacher (import --force)
  Provenance provenance;        // filled when read: how it relates to its projection
};

// A hierarchical ensemble trained for a projection (at most one per
// projection), as named tensors; ldaproj/ensemble.hpp gives them meaning.
struct StoredEnsemble {
  std::int64_t id = 0;
  std::string projection;
  std::string config_json;
  std::vector<StudentTensor> tensors;  // empty when listed by ensembles()
  std::string metrics_json;            // free-form JSON object, "{}" when none
  std::string created_at;              // ISO-8601 UTC
  // As for StoredStudent.
  std::optional<Fingerprint> teacher_fingerprint;
  bool forced = false;
  Provenance provenance;
};

// What save_projection_as does when a projection of the same name exists.
enum class ExistingProjection {
  Replace,   // replace it, dropping its student and ensemble (SavedProjection says so)
  Refuse,    // InputError naming it and what it holds
  NextFree,  // keep it: save under the first free "<name>-2", "<name>-3", ...
};

struct SavedProjection {
  std::int64_t id = 0;
  std::string name;              // as saved (NextFree may have added a suffix)
  bool replaced = false;         // an earlier projection of that name was replaced...
  bool dropped_student = false;  // ...and its student and ensemble with it
  bool dropped_ensemble = false;
  std::string previously_active;  // the model's active projection before, "" if none or replaced
};

struct DeletedProjection {
  std::string name;
  bool had_student = false, had_ensemble = false;
  std::string activated;  // the projection made active in its place, "" if none was needed
};

struct ImportBatch {
  std::int64_t id = 0;
  std::string file;  // absolute path as given at import time
  std::string sha256;
  std::string status;  // "imported"
  std::string imported_at;
};

struct StoreStats {
  std::int64_t clusters = 0, questions = 0, answers = 0, batches = 0;
  std::vector<std::pair<std::string, std::int64_t>> embeddings_per_model;
  std::vector<Projection> projections;  // without heads
  std::vector<StoredStudent> students;  // without tensors
  std::vector<StoredEnsemble> ensembles;  // without tensors
  int schema_version = 0;
};

// How far the store has moved on since its texts were embedded and its
// projection trained: counts from SQL alone (no vectors are read), so every
// command and the server can warn cheaply. describe_staleness() words them.
struct Staleness {
  std::string model;       // the embedding model counted; "" when nothing was embedded yet
  std::int64_t questions_without_embedding = 0;  // not searched until `ldaproj embed`
  std::int64_t answers_without_embedding = 0;    // their clusters drop out of results until `ldaproj embed`
  std::string projection;  // the projection counted; "" when none is trained
  // Clusters with questions and an answer but no head (imported after
  // training): routing cannot reach them until `ldaproj train`.
  std::int64_t clusters_without_head = 0;
  // Heads whose cluster gained, lost or re-worded questions or answers since
  // training (the head still holds the old centroid and answer). Projections
  // trained before ldaproj recorded what they were trained on count only
  // gained or lost questions.
  std::int64_t clusters_changed = 0;
  bool any() const {
    return questions_without_embedding + answers_without_embedding + clusters_without_head + clusters_changed > 0;
  }
};

// The threshold save_reject_threshold stored in a projection's metrics JSON;
// nullopt when there is none.
std::optional<float> stored_reject_threshold(const std::string& metrics_json);

// One sentence per finding, naming the count and the command that fixes it
// (with `--db db_path`); empty when nothing is stale.
std::vector<std::string> describe_staleness(const Staleness& staleness, const std::string& db_path);

// A Store is one SQLite connection: use each Store from one thread at a time
// (open one per thread). Other processes and Stores may read while one writes
// (WAL): a reader sees each logical write (an import, an embedding batch, a
// training run) completely or not at all.
class Store {
 public:
  // Opens (creating if absent) and migrates to kSchemaVersion. WAL mode,
  // foreign keys on. Throws InputError for a database from a newer schema or a
  // file that is not an ldaproj database.
  static Store open(const std::filesystem::path& db_path);
  // Opens an existing database read-only (no migration; an older schema is an
  // error). Works on a database whose file or directory this user cannot
  // write; see docs/RELIABILITY.md for what that needs.
  static Store open_read_only(const std::filesystem::path& db_path);
  // For commands that only read: open() when this user may write the file and
  // its directory (so an older schema is migrated), open_read_only() otherwise.
  static Store open_for_reading(const std::filesystem::path& db_path);

  // While a ReadSnapshot lives, every read through this Store sees the same
  // committed state of the database, however many writes other connections
  // commit meanwhile (each read method otherwise takes its own snapshot).
  // Writing through this Store while it lives is an error.
  class ReadSnapshot {
   public:
    ReadSnapshot(ReadSnapshot&&) noexcept;
    ReadSnapshot& operator=(ReadSnapshot&&) = delete;
    ReadSnapshot(const ReadSnapshot&) = delete;
    ReadSnapshot& operator=(const ReadSnapshot&) = delete;
    ~ReadSnapshot();

   private:
    friend class Store;
    explicit ReadSnapshot(const Store& store);
    const Store* store_ = nullptr;
  };
  ReadSnapshot read_snapshot() const;

  std::vector<Cluster> clusters() const;
  std::vector<Question> questions() const;
  std::vector<Answer> answers() const;

  // Registers the model or returns the existing id; InputError when the name
  // exists with another dimension.
  std::int64_t ensure_model(const std::string& name, std::size_t dim);
  std::optional<EmbeddingModel> find_model(const std::string& name) const;

  std::vector<PendingText> missing_embeddings(std::int64_t model_id, EntityKind kind) const;
  // One transaction; rows of `vectors` must have the model's dimension and be finite.
  void put_embeddings(std::int64_t model_id, EntityKind kind,
                      const std::vector<std::int64_t>& ids, const Matrix& vectors);
  EmbeddingSet embeddings(std::int64_t model_id, EntityKind kind) const;

  // Stores the projection, its heads and its fingerprint and makes it the
  // active one for its model, all in one transaction. Returns its id. A
  // projection with the same name is replaced (save_projection_as says
  // what that dropped, or keeps it).
  std::int64_t save_projection(const Projection& projection);
  SavedProjection save_projection_as(const Projection& projection, ExistingProjection existing);
  // Makes the named projection the store's only active one (the default of
  // every command), in one transaction; returns the one active before ("" if
  // none). InputError listing the projections when there is none of that name.
  std::string activate_projection(const std::string& name);
  // Deletes the named projection with its student and ensemble, in one
  // transaction. The active one is refused unless `activate` names another to
  // activate instead, or `force` is set (then the most recently trained one
  // left becomes active). InputError listing the projections for unknown names.
  DeletedProjection delete_projection(const std::string& name, const std::string& activate = {},
                                      bool force = false);
  // Stores an out-of-scope threshold with the named projection (its metrics
  // JSON, "reject_below"), chosen on `chosen_on` (a held-out file) by
  // `validate --choose-reject-threshold --save-reject-threshold`; query and
  // serve use it when not given one. One transaction; InputError for an
  // unknown projection or a non-finite threshold.
  void save_reject_threshold(const std::string& projection, float threshold, const std::string& chosen_on);
  // The named (or active) projection's fingerprint; nullopt without one.
  std::optional<Fingerprint> projection_fingerprint(const std::string& name = {}) const;
  // The named projection, or the active one when name is empty; nullopt if none.
  std::optional<Projection> load_projection(const std::string& name = {}) const;
  std::vector<Projection> projections() const;  // without heads

  // Stores `student` as the student of the projection it names, replacing an
  // earlier one, in one transaction. Returns its id. InputError when the
  // projection does not exist, the weights do not match their config,
  // their dimension is not the projection's model's, or its teacher
  // fingerprint is not the projection's and it is not `forced`; nothing is
  // written then.
  std::int64_t save_student(const StoredStudent& student);
  // The student of the named projection (or the active one when empty).
  std::optional<StoredStudent> load_student(const std::string& projection_name = {}) const;
  std::vector<StoredStudent> students() const;  // without tensors

  // Stores the ensemble of the projection it names, replacing an earlier
  // one, in one transaction. InputError when the projection does not exist,
  // the config is not a JSON object, a tensor is malformed or not finite, or
  // the teacher fingerprint differs as for save_student; nothing is written then.
  std::int64_t save_ensemble(const StoredEnsemble& ensemble);
  // The ensemble of the named projection (or the active one when empty).
  std::optional<StoredEnsemble> load_ensemble(const std::string& projection_name = {}) const;
  std::vector<StoredEnsemble> ensembles() const;  // without tensors

  std::vector<ImportBatch> batches() const;
  StoreStats stats() const;
  // For the named projection (the active one when empty) and its model; with
  // no projection, for the first embedding model, if any. One snapshot.
  Staleness staleness(const std::string& projection_name = {}) const;

  // A consistent copy of the whole database at `destination` (which must not
  // exist) through SQLite's VACUUM INTO: safe while other processes write,
  // unlike copying a WAL database's file. Written under a temporary name and
  // renamed, so a failure leaves no file behind.
  void backup_to(const std::filesystem::path& destination) const;

  const std::filesystem::path& path() const;

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();

  struct Impl;
  Impl& impl() const;  // for the importer (src/store) only

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ldaproj
