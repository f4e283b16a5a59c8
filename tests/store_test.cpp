// Tests for the SQLite store: schema creation and versioning, refusal of
// foreign files, embeddings (bit-exact, dimension and finiteness checks) and
// projections (save/load, active switching, replacement by name) and the
// students distilled from them.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>

#include "ldaproj/error.hpp"
#include "temp_dir_test_base.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/store.hpp"
#include "store/dump.hpp"
#include "store/schema.hpp"
#include "store/store_impl.hpp"

namespace fs = std::filesystem;
using namespace ldaproj;

namespace {

class StoreTest : public ldaproj::testing_support::TempDirTest {
 protected:
  void write(const fs::path& path, const std::string& content) const { write_file(path, content); }

  // Two clusters, three questions, two answers.
  Store seeded_store(const std::string& name = "seeded.db") {
    Store store = Store::open(file(name));
    const fs::path data = file("seed.jsonl");
    write(data,
          "{\"cluster\":\"a\",\"question\":\"first a\"}\n"
          "{\"cluster\":\"a\",\"question\":\"second a\"}\n"
          "{\"cluster\":\"a\",\"answer\":\"answer a\"}\n"
          "{\"cluster\":\"b\",\"question\":\"only b\"}\n"
          "{\"cluster\":\"b\",\"answer\":\"answer b\"}\n");
    import_file(store, data);
    return store;
  }

  // Runs SQL on the file with a separate raw connection.
  void raw_exec(const fs::path& path, const std::string& sql) const {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    const std::string message = error ? error : "";
    sqlite3_free(error);
    sqlite3_close(db);
    ASSERT_EQ(rc, SQLITE_OK) << message;
  }
};

std::string message_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return {};
}

Matrix vectors_of(std::size_t rows, std::size_t cols, std::uint32_t seed) {
  Matrix m(rows, cols);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : m.data) v = uniform(rng);
  return m;
}

bool same_bits(const float* a, const float* b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i])) return false;
  }
  return true;
}

std::int64_t count_rows_for_test(const Store& store, const std::string& table) {
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(store.impl().db, ("SELECT count(*) FROM " + table).c_str(), -1, &stmt, nullptr);
  sqlite3_step(stmt);
  const std::int64_t n = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return n;
}

std::vector<std::int64_t> ids_of(const std::vector<PendingText>& pending) {
  std::vector<std::int64_t> ids;
  for (const auto& p : pending) ids.push_back(p.id);
  return ids;
}

}  // namespace

TEST_F(StoreTest, CreatesSchemaInWalModeAndReopens) {
  const fs::path path = file("new.db");
  std::string first_dump;
  {
    Store store = Store::open(path);
    EXPECT_EQ(store.path(), path);
    const StoreStats stats = store.stats();
    EXPECT_EQ(stats.schema_version, kSchemaVersion);
    EXPECT_EQ(stats.clusters, 0);
    first_dump = store_detail::logical_dump(store);
  }
  for (const char* table : {"clusters", "questions", "answers", "embedding_models", "question_embeddings",
                            "answer_embeddings", "projections", "projection_heads", "import_batches",
                            "students", "student_tensors"}) {
    EXPECT_NE(first_dump.find(std::string("table ") + table + " (0 rows)"), std::string::npos) << table;
  }
  EXPECT_NE(first_dump.find("user_version=" + std::to_string(kSchemaVersion) + "\n"), std::string::npos);

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))), "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);

  Store reopened = Store::open(path);
  EXPECT_EQ(store_detail::logical_dump(reopened), first_dump);
  EXPECT_EQ(reopened.stats().schema_version, kSchemaVersion);
}

TEST_F(StoreTest, MigrationsAreOrderedAndIdempotent) {
  const auto migrations = schema::migrations();
  ASSERT_FALSE(migrations.empty());
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    EXPECT_EQ(migrations[i].version, static_cast<int>(i) + 1);
  }
  EXPECT_EQ(migrations.back().version, kSchemaVersion);

  Store store = seeded_store();
  const std::string before = store_detail::logical_dump(store);
  EXPECT_EQ(schema::migrate(store.impl().db, store.path()), 0);
  EXPECT_EQ(store_detail::logical_dump(store), before);
  Store again = Store::open(store.path());
  EXPECT_EQ(store_detail::logical_dump(again), before);
}

TEST_F(StoreTest, EmptyFileBecomesADatabase) {
  const fs::path path = file("empty.db");
  write(path, "");
  Store store = Store::open(path);
  EXPECT_EQ(store.stats().schema_version, kSchemaVersion);
}

TEST_F(StoreTest, RefusesNewerSchema) {
  const fs::path path = file("future.db");
  { Store store = Store::open(path); }
  raw_exec(path, "PRAGMA user_version = " + std::to_string(kSchemaVersion + 1));
  const std::string expected = "database " + path.string() + " has schema version " +
                               std::to_string(kSchemaVersion + 1) + ", this ldaproj supports up to " +
                               std::to_string(kSchemaVersion) + "; upgrade ldaproj";
  EXPECT_EQ(message_of([&] { Store::open(path); }), expected);
  EXPECT_EQ(message_of([&] { Store::open_read_only(path); }), expected);
}

TEST_F(StoreTest, RefusesFileThatIsNotADatabase) {
  const fs::path path = file("notes.txt");
  const std::string content = "These are my notes, not a database. Please do not overwrite them.\n";
  write(path, content);
  for (int read_only = 0; read_only < 2; ++read_only) {
    const std::string message = message_of([&] {
      if (read_only) {
        Store::open_read_only(path);
      } else {
        Store::open(path);
      }
    });
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find("not an SQLite database"), std::string::npos) << message;
  }
  std::ifstream in(path, std::ios::binary);
  const std::string after((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(after, content);
}

TEST_F(StoreTest, RefusesAnotherProgramsDatabase) {
  const fs::path path = file("other.db");
  raw_exec(path, "CREATE TABLE inventory(item TEXT, count INTEGER); INSERT INTO inventory VALUES ('apple', 3);");
  const std::string message = message_of([&] { Store::open(path); });
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_NE(message.find("another program"), std::string::npos) << message;
}

TEST_F(StoreTest, ReadOnlyOpen) {
  const fs::path missing = file("missing.db");
  EXPECT_NE(message_of([&] { Store::open_read_only(missing); }).find("no database at"), std::string::npos);
  EXPECT_FALSE(fs::exists(missing));

  const fs::path old = file("old.db");
  write(old, "");
  EXPECT_NE(message_of([&] { Store::open_read_only(old); }).find("has schema version 0"), std::string::npos);

  { Store store = seeded_store("ro.db"); }
  Store store = Store::open_read_only(file("ro.db"));
  EXPECT_EQ(store.clusters().size(), 2u);
  EXPECT_EQ(store.questions().size(), 3u);
  EXPECT_THROW(store.ensure_model("m", 4), Error);
}

TEST_F(StoreTest, ReportsPathsThatCannotBeOpened) {
  const fs::path nowhere = file("no-such-dir") / "db.sqlite";
  std::string message = message_of([&] { Store::open(nowhere); });
  EXPECT_NE(message.find("cannot open database " + nowhere.string()), std::string::npos) << message;
  message = message_of([&] { Store::open(dir_); });
  EXPECT_NE(message.find("is a directory"), std::string::npos) << message;
}

TEST_F(StoreTest, ModelsAreRegisteredOnce) {
  Store store = Store::open(file("models.db"));
  const std::int64_t id = store.ensure_model("mini", 8);
  EXPECT_EQ(store.ensure_model("mini", 8), id);
  const auto found = store.find_model("mini");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->id, id);
  EXPECT_EQ(found->dim, 8u);
  EXPECT_FALSE(store.find_model("other").has_value());
  const std::string message = message_of([&] { store.ensure_model("mini", 16); });
  EXPECT_NE(message.find("dimension 8, got 16"), std::string::npos) << message;
  EXPECT_THROW(store.ensure_model("zero", 0), InputError);
}

TEST_F(StoreTest, EmbeddingsRoundTripBitExactInIdOrder) {
  Store store = seeded_store();
  const std::size_t dim = 6;
  const std::int64_t model = store.ensure_model("mini", dim);
  auto pending = store.missing_embeddings(model, EntityKind::Question);
  ASSERT_EQ(pending.size(), 3u);
  EXPECT_EQ(pending[0].text, "first a");
  EXPECT_LT(pending[0].id, pending[1].id);
  EXPECT_LT(pending[1].id, pending[2].id);

  // Awkward values: negative zero, denormals, extremes, and random bits.
  Matrix vectors = vectors_of(3, dim, 7);
  vectors(0, 0) = -0.0f;
  vectors(0, 1) = std::numeric_limits<float>::denorm_min();
  vectors(0, 2) = std::numeric_limits<float>::max();
  vectors(0, 3) = std::numeric_limits<float>::lowest();
  vectors(1, 0) = std::nextafter(1.0f, 2.0f);
  // Stored in reverse order; read back in id order.
  std::vector<std::int64_t> ids = ids_of(pending);
  Matrix reversed(3, dim);
  for (std::size_t i = 0; i < 3; ++i) std::copy(vectors.row(i), vectors.row(i) + dim, reversed.row(2 - i));
  store.put_embeddings(model, EntityKind::Question, {ids[2], ids[1], ids[0]}, reversed);

  EXPECT_TRUE(store.missing_embeddings(model, EntityKind::Question).empty());
  EXPECT_EQ(store.missing_embeddings(model, EntityKind::Answer).size(), 2u);
  const EmbeddingSet set = store.embeddings(model, EntityKind::Question);
  EXPECT_EQ(set.ids, ids);
  ASSERT_EQ(set.vectors.rows, 3u);
  ASSERT_EQ(set.vectors.cols, dim);
  EXPECT_TRUE(same_bits(set.vectors.data.data(), vectors.data.data(), vectors.data.size()));
  EXPECT_TRUE(std::signbit(set.vectors(0, 0)));

  const EmbeddingSet answers = store.embeddings(model, EntityKind::Answer);
  EXPECT_TRUE(answers.ids.empty());
  EXPECT_EQ(answers.vectors.rows, 0u);
  EXPECT_EQ(answers.vectors.cols, dim);

  // Writing again replaces.
  Matrix replacement = vectors_of(1, dim, 99);
  store.put_embeddings(model, EntityKind::Question, {ids[1]}, replacement);
  const EmbeddingSet updated = store.embeddings(model, EntityKind::Question);
  ASSERT_EQ(updated.vectors.rows, 3u);
  EXPECT_TRUE(same_bits(updated.vectors.row(1), replacement.row(0), dim));
  EXPECT_TRUE(same_bits(updated.vectors.row(0), vectors.row(0), dim));

  const StoreStats stats = store.stats();
  ASSERT_EQ(stats.embeddings_per_model.size(), 1u);
  EXPECT_EQ(stats.embeddings_per_model[0].first, "mini");
  EXPECT_EQ(stats.embeddings_per_model[0].second, 3);
}

TEST_F(StoreTest, EmbeddingWritesAreCheckedBeforeWriting) {
  Store store = seeded_store();
  const std::int64_t model = store.ensure_model("mini", 4);
  const auto ids = ids_of(store.missing_embeddings(model, EntityKind::Question));
  ASSERT_EQ(ids.size(), 3u);
  const std::string before = store_detail::logical_dump(store);

  std::string message = message_of([&] { store.put_embeddings(model, EntityKind::Question, ids, vectors_of(3, 5, 1)); });
  EXPECT_NE(message.find("must have dimension 4, got 5"), std::string::npos) << message;

  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    Matrix vectors = vectors_of(3, 4, 2);
    vectors(2, 3) = bad;
    message = message_of([&] { store.put_embeddings(model, EntityKind::Question, ids, vectors); });
    EXPECT_NE(message.find("non-finite"), std::string::npos) << message;
    EXPECT_NE(message.find("question " + std::to_string(ids[2])), std::string::npos) << message;
  }

  EXPECT_THROW(store.put_embeddings(model, EntityKind::Question, {ids[0]}, vectors_of(2, 4, 3)), InputError);

  // The first rows are valid; the unknown id comes last, so this proves the
  // whole write is one transaction.
  message = message_of([&] {
    store.put_embeddings(model, EntityKind::Question, {ids[0], ids[1], 987654}, vectors_of(3, 4, 4));
  });
  EXPECT_NE(message.find("question 987654 does not exist"), std::string::npos) << message;
  EXPECT_EQ(store_detail::logical_dump(store), before);
}

TEST_F(StoreTest, CorruptEmbeddingBlobIsReportedOnRead) {
  const fs::path path = file("corrupt.db");
  {
    Store store = seeded_store("corrupt.db");
    const std::int64_t model = store.ensure_model("mini", 4);
    const auto ids = ids_of(store.missing_embeddings(model, EntityKind::Answer));
    store.put_embeddings(model, EntityKind::Answer, ids, vectors_of(ids.size(), 4, 5));
  }
  raw_exec(path, "UPDATE answer_embeddings SET vector = x'000000000000' "
                 "WHERE answer_id = (SELECT min(answer_id) FROM answer_embeddings)");
  Store store = Store::open(path);
  const auto model = store.find_model("mini");
  ASSERT_TRUE(model.has_value());
  try {
    store.embeddings(model->id, EntityKind::Answer);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("has 6 bytes, expected 16"), std::string::npos) << message;
    EXPECT_NE(message.find("answer"), std::string::npos) << message;
  }
}

TEST_F(StoreTest, ProjectionsSaveLoadAndSwitchActive) {
  Store store = seeded_store();
  const std::size_t dim = 3;
  store.ensure_model("mini", dim);
  store.ensure_model("large", dim);
  const auto clusters = store.clusters();
  ASSERT_EQ(clusters.size(), 2u);

  auto make = [&](const std::string& name, const std::string& model, std::uint32_t seed) {
    Projection p;
    p.name = name;
    p.model = model;
    p.temperature = 0.07f;
    p.centroid_method = "reweighted";
    p.metrics_json = R"({"heads":2})";
    const Matrix values = vectors_of(4, dim, seed);
    for (std::size_t c = 0; c < clusters.size(); ++c) {
      Head head;
      head.cluster_id = clusters[c].id;
      head.centroid.assign(values.row(2 * c), values.row(2 * c) + dim);
      head.answer.assign(values.row(2 * c + 1), values.row(2 * c + 1) + dim);
      head.num_questions = static_cast<std::int64_t>(c) + 5;
      p.heads.push_back(head);
    }
    return p;
  };

  EXPECT_FALSE(store.load_projection().has_value());
  const Projection first = make("first", "mini", 1);
  const std::int64_t first_id = store.save_projection(first);
  auto loaded = store.load_projection();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->id, first_id);
  EXPECT_EQ(loaded->name, "first");
  EXPECT_EQ(loaded->model, "mini");
  EXPECT_EQ(loaded->temperature, 0.07f);
  EXPECT_EQ(loaded->centroid_method, "reweighted");
  EXPECT_EQ(loaded->metrics_json, R"({"heads":2})");
  EXPECT_TRUE(loaded->active);
  EXPECT_EQ(loaded->created_at.size(), 20u) << loaded->created_at;  // 2024-01-02T03:04:05Z
  ASSERT_EQ(loaded->heads.size(), 2u);
  for (std::size_t h = 0; h < 2; ++h) {
    EXPECT_EQ(loaded->heads[h].cluster_id, first.heads[h].cluster_id);
    EXPECT_EQ(loaded->heads[h].num_questions, first.heads[h].num_questions);
    EXPECT_TRUE(same_bits(loaded->heads[h].centroid.data(), first.heads[h].centroid.data(), dim));
    EXPECT_TRUE(same_bits(loaded->heads[h].answer.data(), first.heads[h].answer.data(), dim));
  }

  store.save_projection(make("second", "mini", 2));
  EXPECT_EQ(store.load_projection()->name, "second");
  EXPECT_FALSE(store.load_projection("first")->active);
  EXPECT_TRUE(store.load_projection("second")->active);

  // Another model's projection does not deactivate "second".
  store.save_projection(make("third", "large", 3));
  EXPECT_EQ(store.load_projection()->name, "third");
  EXPECT_TRUE(store.load_projection("second")->active);
  EXPECT_FALSE(store.load_projection("missing").has_value());

  // Same name: replaced (one row), new heads, active again for its model.
  const Projection replacement = make("first", "mini", 4);
  store.save_projection(replacement);
  const auto all = store.projections();
  ASSERT_EQ(all.size(), 3u);
  int named_first = 0;
  for (const Projection& p : all) {
    named_first += p.name == "first";
    EXPECT_TRUE(p.heads.empty());
  }
  EXPECT_EQ(named_first, 1);
  const auto reloaded = store.load_projection("first");
  ASSERT_TRUE(reloaded.has_value());
  EXPECT_TRUE(reloaded->active);
  EXPECT_FALSE(store.load_projection("second")->active);
  EXPECT_TRUE(store.load_projection("third")->active);
  EXPECT_TRUE(same_bits(reloaded->heads[0].centroid.data(), replacement.heads[0].centroid.data(), dim));
  EXPECT_EQ(store.stats().projections.size(), 3u);
}

TEST_F(StoreTest, InvalidProjectionsChangeNothing) {
  Store store = seeded_store();
  store.ensure_model("mini", 2);
  const auto clusters = store.clusters();
  Projection good;
  good.name = "good";
  good.model = "mini";
  good.centroid_method = "mean";
  good.heads.push_back({clusters[0].id, {1.0f, 0.0f}, {0.0f, 1.0f}, 2});
  store.save_projection(good);
  const std::string before = store_detail::logical_dump(store);

  Projection bad = good;
  bad.name = "bad";
  bad.heads.push_back({clusters[1].id, {1.0f, 0.0f, 0.0f}, {0.0f, 1.0f}, 1});
  EXPECT_NE(message_of([&] { store.save_projection(bad); }).find("dimension 2"), std::string::npos);

  bad = good;
  bad.name = "bad";
  bad.heads.push_back({424242, {1.0f, 0.0f}, {0.0f, 1.0f}, 1});
  EXPECT_NE(message_of([&] { store.save_projection(bad); }).find("cluster 424242 does not exist"),
            std::string::npos);

  bad = good;  // same name as the active one: a failure must not remove it
  bad.heads.push_back({clusters[0].id, {0.0f, 1.0f}, {1.0f, 0.0f}, 1});
  EXPECT_NE(message_of([&] { store.save_projection(bad); }).find("two heads"), std::string::npos);

  bad = good;
  bad.model = "unknown";
  EXPECT_THROW(store.save_projection(bad), InputError);
  bad = good;
  bad.heads[0].answer[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(store.save_projection(bad), InputError);
  bad = good;
  bad.temperature = 0.0f;
  EXPECT_THROW(store.save_projection(bad), InputError);
  bad = good;
  bad.metrics_json = "not json";
  EXPECT_THROW(store.save_projection(bad), InputError);

  EXPECT_EQ(store_detail::logical_dump(store), before);
}

TEST_F(StoreTest, StatsCountEverything) {
  Store store = seeded_store();
  const StoreStats stats = store.stats();
  EXPECT_EQ(stats.clusters, 2);
  EXPECT_EQ(stats.questions, 3);
  EXPECT_EQ(stats.answers, 2);
  EXPECT_EQ(stats.batches, 1);
  EXPECT_TRUE(stats.embeddings_per_model.empty());
  EXPECT_TRUE(stats.projections.empty());
}

TEST_F(StoreTest, ReaderSeesDataWhileWriterIsOpen) {
  Store writer = seeded_store();
  Store reader = Store::open_read_only(writer.path());
  const std::int64_t model = writer.ensure_model("mini", 2);
  const auto ids = ids_of(writer.missing_embeddings(model, EntityKind::Answer));
  writer.put_embeddings(model, EntityKind::Answer, ids, vectors_of(ids.size(), 2, 8));
  EXPECT_EQ(reader.embeddings(model, EntityKind::Answer).ids, ids);
}

namespace {

// A small student for store tests: dim 4, 2 heads x 1 key, attention only.
StudentWeights tiny_student(float fill) {
  StudentConfig config;
  config.dim = 4;
  config.num_heads = 2;
  config.keys_per_head = 1;
  config.ff_dim = 6;
  config.variant = StudentVariant::Attention;
  StudentWeights w = StudentWeights::zeros(config);
  float v = fill;
  for (auto& t : w.tensors)
    for (float& x : t.values) x = (v += 0.25f);
  return w;
}

Projection one_head_projection(const Store& store, const std::string& name, const std::string& model, std::size_t dim) {
  Projection p;
  p.name = name;
  p.model = model;
  p.centroid_method = "mean";
  Head head;
  head.cluster_id = store.clusters().front().id;
  head.centroid.assign(dim, 0.5f);
  head.answer.assign(dim, 0.5f);
  p.heads.push_back(head);
  return p;
}

}  // namespace

TEST_F(StoreTest, StudentsSaveLoadReplaceAndFollowTheirProjection) {
  Store store = seeded_store();
  store.ensure_model("mini", 4);
  store.save_projection(one_head_projection(store, "teacher", "mini", 4));
  EXPECT_FALSE(store.load_student().has_value());

  StoredStudent student;
  student.projection = "teacher";
  student.weights = tiny_student(0.0f);
  student.metrics_json = R"({"validation_cosine":0.99})";
  store.save_student(student);
  auto loaded = store.load_student();
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->projection, "teacher");
  EXPECT_EQ(loaded->metrics_json, student.metrics_json);
  EXPECT_EQ(loaded->weights.config.to_json(), student.weights.config.to_json());
  ASSERT_EQ(loaded->weights.tensors.size(), student.weights.tensors.size());
  for (std::size_t i = 0; i < student.weights.tensors.size(); ++i) {
    EXPECT_EQ(loaded->weights.tensors[i].name, student.weights.tensors[i].name);
    EXPECT_EQ(loaded->weights.tensors[i].shape, student.weights.tensors[i].shape);
    EXPECT_TRUE(same_bits(loaded->weights.tensors[i].values.data(), student.weights.tensors[i].values.data(),
                          student.weights.tensors[i].values.size()));
  }
  EXPECT_EQ(store.load_student("teacher")->id, loaded->id);
  EXPECT_FALSE(store.load_student("missing").has_value());

  // Distilling again replaces the student.
  student.weights = tiny_student(1.0f);
  store.save_student(student);
  ASSERT_EQ(store.students().size(), 1u);
  EXPECT_TRUE(store.students().front().weights.tensors.empty());
  EXPECT_EQ(store.load_student()->weights.tensors.front().values, student.weights.tensors.front().values);
  EXPECT_EQ(store.stats().students.size(), 1u);

  // Retraining the teacher under the same name drops its stale student.
  store.save_projection(one_head_projection(store, "teacher", "mini", 4));
  EXPECT_FALSE(store.load_student("teacher").has_value());
  EXPECT_EQ(count_rows_for_test(store, "student_tensors"), 0);
}

TEST_F(StoreTest, InvalidStudentsChangeNothing) {
  Store store = seeded_store();
  store.ensure_model("mini", 4);
  store.ensure_model("wide", 8);
  store.save_projection(one_head_projection(store, "teacher", "mini", 4));
  store.save_projection(one_head_projection(store, "wide_teacher", "wide", 8));
  StoredStudent good;
  good.projection = "teacher";
  good.weights = tiny_student(0.0f);
  store.save_student(good);
  const std::string before = store_detail::logical_dump(store);

  StoredStudent s = good;
  s.projection = "nobody";
  EXPECT_NE(message_of([&] { store.save_student(s); }).find("no projection \"nobody\""), std::string::npos);
  s = good;
  s.projection = "wide_teacher";  // 4-d student for an 8-d model
  EXPECT_NE(message_of([&] { store.save_student(s); }).find("dimension 4"), std::string::npos);
  s = good;
  s.weights.tensors.back().values[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(message_of([&] { store.save_student(s); }).find("non-finite"), std::string::npos);
  s = good;
  s.weights.tensors.pop_back();
  EXPECT_NE(message_of([&] { store.save_student(s); }).find("missing"), std::string::npos);
  s = good;
  s.metrics_json = "[1]";
  EXPECT_NE(message_of([&] { store.save_student(s); }).find("JSON object"), std::string::npos);
  EXPECT_EQ(store_detail::logical_dump(store), before);
}

TEST_F(StoreTest, VersionOneDatabaseIsMigratedToStudents) {
  const fs::path path = file("v1.db");
  raw_exec(path, std::string(schema::migrations()[0].sql) + "; PRAGMA user_version = 1;");
  Store store = Store::open(path);
  EXPECT_EQ(store.stats().schema_version, kSchemaVersion);
  EXPECT_TRUE(store.students().empty());
  const std::string dump = store_detail::logical_dump(store);
  EXPECT_NE(dump.find("table students (0 rows)"), std::string::npos) << dump;
}
