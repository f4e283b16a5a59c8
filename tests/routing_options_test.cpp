// Options of the teacher beyond one learned key per head: several sub-keys
// per head, a query adapter learned with the keys, and blends of the
// teacher's projection with question routing or the direct cosine. Each is
// checked against a slow reference written out loop by loop.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "ldaproj/distill.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/synthetic.hpp"
#include "ldaproj/teacher.hpp"
#include "ldaproj/train.hpp"
#include "demo_store.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

Matrix unit_rows(Matrix m) {
  normalize_rows(m, "row");
  return m;
}

double dot(const float* a, const float* b, std::size_t d) {
  double s = 0;
  for (std::size_t j = 0; j < d; ++j) s += double(a[j]) * b[j];
  return s;
}

// Mean over questions of -log(sum of the softmax mass of its head's keys), by loops.
double reference_loss(const Matrix& keys, const std::vector<std::size_t>& head_of_key, const Matrix& questions,
                      const std::vector<std::size_t>& head_of_question, double t) {
  const Matrix u = unit_rows(keys), q = unit_rows(questions);
  double loss = 0;
  for (std::size_t r = 0; r < q.rows; ++r) {
    double total = 0, mine = 0;
    for (std::size_t k = 0; k < u.rows; ++k) {
      const double e = std::exp(dot(q.row(r), u.row(k), q.cols) / t);
      total += e;
      if (head_of_key[k] == head_of_question[r]) mine += e;
    }
    loss -= std::log(mine / total);
  }
  return loss / double(q.rows);
}

Matrix random_rows(std::size_t rows, std::size_t dim, std::uint64_t seed) {
  Matrix m(rows, dim);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : m.data) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    v = static_cast<float>(double(x % 20001) / 10000.0 - 1.0);
  }
  return m;
}

TEST(SubKeys, LearningLossMatchesTheLogSumExpReference) {
  const Matrix questions = random_rows(24, 8, 3);
  std::vector<std::size_t> head_of_question(24);
  for (std::size_t r = 0; r < 24; ++r) head_of_question[r] = r % 3;
  Matrix keys = random_rows(7, 8, 5);
  const std::vector<std::size_t> head_of_key = {0, 0, 1, 1, 1, 2, 2};
  const double expected = reference_loss(keys, head_of_key, questions, head_of_question, 0.2);
  Matrix learned = keys;
  const KeyLearningReport r =
      learn_keys(learned, head_of_key, nullptr, questions, head_of_question, 0.2f, {30, 0.01f});
  EXPECT_NEAR(r.initial_loss, expected, 1e-4);
  EXPECT_NEAR(r.final_loss, reference_loss(learned, head_of_key, questions, head_of_question, 0.2), 1e-4);
  EXPECT_LT(r.final_loss, r.initial_loss);
  for (std::size_t k = 0; k < learned.rows; ++k) EXPECT_NEAR(dot(learned.row(k), learned.row(k), 8), 1.0, 1e-5);
  // One key per head: the general form is the plain one.
  Matrix a = random_rows(3, 8, 7), b = a;
  learn_keys(a, questions, head_of_question, 0.2f, {10, 0.01f});
  learn_keys(b, {0, 1, 2}, nullptr, questions, head_of_question, 0.2f, {10, 0.01f});
  EXPECT_EQ(a.data, b.data);
  // A head without a key cannot take questions.
  Matrix two = random_rows(2, 8, 9);
  EXPECT_THROW(learn_keys(two, {0, 0}, nullptr, questions, head_of_question, 0.2f), InputError);
}

TEST(QueryAdapter, StartsAsTheIdentityAndLowersTheLoss) {
  const Matrix questions = random_rows(30, 6, 11);
  std::vector<std::size_t> head_of_question(30);
  for (std::size_t r = 0; r < 30; ++r) head_of_question[r] = r % 3;
  const Matrix start = random_rows(3, 6, 13);
  Matrix plain = start, adapted = start, adapter;
  const KeyLearningReport without = learn_keys(plain, {0, 1, 2}, nullptr, questions, head_of_question, 0.1f, {40, 0.01f});
  const KeyLearningReport with =
      learn_keys(adapted, {0, 1, 2}, &adapter, questions, head_of_question, 0.1f, {40, 0.01f, 0.01f, 0.0f});
  EXPECT_NEAR(with.initial_loss, without.initial_loss, 1e-6);  // W starts at zero
  EXPECT_LE(with.final_loss, without.final_loss + 1e-6);
  ASSERT_EQ(adapter.rows, 6u);
  ASSERT_EQ(adapter.cols, 6u);
  // adapt_queries is normalise(q + W q): by loops here.
  const Matrix q = unit_rows(random_rows(4, 6, 17));
  const Matrix got = adapt_queries(adapter, q);
  for (std::size_t r = 0; r < 4; ++r) {
    std::vector<double> z(6);
    double norm = 0;
    for (std::size_t i = 0; i < 6; ++i) {
      z[i] = q(r, i) + dot(adapter.row(i), q.row(r), 6);
      norm += z[i] * z[i];
    }
    for (std::size_t i = 0; i < 6; ++i) EXPECT_NEAR(got(r, i), z[i] / std::sqrt(norm), 1e-5);
  }
  // A zero adapter only normalises.
  const Matrix raw = random_rows(3, 6, 19);
  const Matrix same = adapt_queries(Matrix(6, 6), raw), expected = unit_rows(raw);
  for (std::size_t i = 0; i < same.data.size(); ++i) EXPECT_NEAR(same.data[i], expected.data[i], 1e-6);
  EXPECT_THROW(adapt_queries(Matrix(5, 5), raw), InputError);
}

TEST(SubKeys, KMeansFindsTwoGroupsDeterministically) {
  Matrix questions(6, 2);
  const float at[6][2] = {{1, 0.05f}, {1, -0.05f}, {1, 0}, {0.05f, 1}, {-0.05f, 1}, {0, 1}};
  for (std::size_t r = 0; r < 6; ++r) questions(r, 0) = at[r][0], questions(r, 1) = at[r][1];
  const Matrix keys = kmeans_sub_keys(questions, 2);
  ASSERT_EQ(keys.rows, 2u);
  const bool first_is_x = keys(0, 0) > keys(0, 1);
  EXPECT_NEAR(keys(first_is_x ? 0 : 1, 0), 1.0, 1e-6);
  EXPECT_NEAR(keys(first_is_x ? 1 : 0, 1), 1.0, 1e-6);
  EXPECT_EQ(kmeans_sub_keys(questions, 2).data, keys.data);
  EXPECT_EQ(kmeans_sub_keys(questions, 10).rows, 6u);  // never more keys than questions
}

class RoutingOptionsStore : public testing_support::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    db_ = synthetic_store(12, 8, 16);
  }
  Matrix questions(const Store& store) const {
    return store.embeddings(store.find_model("synthetic")->id, EntityKind::Question).vectors;
  }
  std::string db_;
};

TEST_F(RoutingOptionsStore, SubKeyTeacherMatchesTheReferenceAndMergesRouting) {
  Store store = Store::open(db_);
  TeacherTrainOptions options;
  options.name = "sub";
  options.temperature = 0.05f;
  options.key_epochs = 20;
  options.keys_per_head = 3;
  train_teacher(store, "synthetic", options);
  const Projection p = *store.load_projection("sub");
  const ProjectionRouting routing = projection_routing(p, 16);
  ASSERT_TRUE(routing.has_sub_keys);
  EXPECT_EQ(routing.keys.rows, 36u);
  EXPECT_EQ(routing.adapter.rows, 0u);

  const Searcher searcher = Searcher::load(store, "sub");
  EXPECT_EQ(searcher.num_heads(), 12u);
  const Matrix queries = questions(store);
  SearchOptions search;
  search.routing_top = 12;
  const Matrix projected = searcher.project(queries, search);
  const auto results = searcher.search(queries, search);
  const Matrix q = unit_rows(queries), keys = unit_rows(routing.keys);
  Matrix answers(12, 16);
  for (std::size_t h = 0; h < 12; ++h) std::copy(p.heads[h].answer.begin(), p.heads[h].answer.end(), answers.row(h));
  answers = unit_rows(answers);
  for (std::size_t r = 0; r < q.rows; ++r) {
    // p = normalise(sum_h (sum over h's keys of exp(s_k / t)) answer_h), by loops.
    std::vector<double> head_mass(12, 0.0), p(16, 0.0);
    double total = 0;
    for (std::size_t k = 0; k < keys.rows; ++k) {
      const double e = std::exp(dot(q.row(r), keys.row(k), 16) / 0.05);
      head_mass[routing.head_of_key[k]] += e;
      total += e;
    }
    for (std::size_t h = 0; h < 12; ++h)
      for (std::size_t j = 0; j < 16; ++j) p[j] += head_mass[h] / total * answers(h, j);
    double norm = 0;
    for (double v : p) norm += v * v;
    for (std::size_t j = 0; j < 16; ++j) ASSERT_NEAR(projected(r, j), p[j] / std::sqrt(norm), 2e-4) << r;
    // One routing entry per head, weights summing to one.
    ASSERT_EQ(results[r].routing.size(), 12u);
    std::map<std::int64_t, int> seen;
    double sum = 0;
    for (const RoutingEntry& e : results[r].routing) {
      EXPECT_EQ(++seen[e.cluster_id], 1);
      sum += e.weight;
    }
    EXPECT_NEAR(sum, 1.0, 1e-4);
  }
  // The sparse teacher over every key is the dense one.
  search.method = Method::SparseTeacher;
  search.route_k = 36;
  const Matrix sparse = searcher.project(queries, search);
  for (std::size_t i = 0; i < sparse.data.size(); ++i) ASSERT_NEAR(sparse.data[i], projected.data[i], 1e-4);
  // Students and ensembles learn one key per head: refused with a message.
  EXPECT_THROW(load_projection_teacher(store, "sub"), InputError);
}

TEST_F(RoutingOptionsStore, ZeroAdapterRoutesAsWithoutOne) {
  Store store = Store::open(db_);
  TeacherTrainOptions options;
  options.name = "plain";
  train_teacher(store, "synthetic", options);
  Projection with_zero = *store.load_projection("plain");
  with_zero.name = "zero_adapter";
  with_zero.id = 0;
  with_zero.tensors.push_back({"query_adapter", {16, 16}, std::vector<float>(256, 0.0f)});
  store.save_projection(with_zero);
  EXPECT_EQ(store.load_projection("zero_adapter")->tensors.size(), 1u);
  EXPECT_TRUE(store.load_projection("plain")->tensors.empty());
  const Matrix queries = questions(store);
  SearchOptions search;
  search.include_confidence = true;
  const auto a = Searcher::load(store, "plain").search(queries, search);
  const auto b = Searcher::load(store, "zero_adapter").search(queries, search);
  for (std::size_t r = 0; r < a.size(); ++r) {
    ASSERT_EQ(a[r].answers.front().cluster_id, b[r].answers.front().cluster_id);
    EXPECT_NEAR(a[r].answers.front().score, b[r].answers.front().score, 1e-5);
    EXPECT_NEAR(a[r].confidence, b[r].confidence, 1e-5);
  }
  // Malformed extra tensors are refused and nothing is saved.
  Projection bad = with_zero;
  bad.name = "bad";
  bad.tensors = {{"query_adapter", {16, 15}, std::vector<float>(240, 0.0f)}};
  EXPECT_THROW(store.save_projection(bad), InputError);
  bad.tensors = {{"sub_keys", {1, 16}, std::vector<float>(16, 1.0f)}};  // without its heads
  EXPECT_THROW(store.save_projection(bad), InputError);
  bad.tensors = {{"sub_keys", {1, 16}, std::vector<float>(16, 1.0f)}, {"sub_key_heads", {1}, {0.0f}}};
  EXPECT_THROW(store.save_projection(bad), InputError);  // heads 1.. have no key
  EXPECT_FALSE(store.load_projection("bad"));
  // --query-adapter is learned with the keys.
  options.query_adapter = true;
  EXPECT_THROW(train_teacher(store, "synthetic", options), InputError);
  options.key_epochs = 5;
  options.name = "adapted";
  train_teacher(store, "synthetic", options);
  EXPECT_EQ(projection_routing(*store.load_projection("adapted"), 16).adapter.rows, 16u);
}

TEST_F(RoutingOptionsStore, ADatabaseFromSchema3LoadsAndRoutesAsBefore) {
  {
    Store store = Store::open(db_);
    train_teacher(store, "synthetic", TeacherTrainOptions{});
  }
  const Matrix before = [&] {
    Store store = Store::open(db_);
    return Searcher::load(store).project(questions(store), SearchOptions{});
  }();
  // What a database written before projection tensors existed looks like.
  testing_support::raw_sql(db_, "DROP TABLE projection_tensors; PRAGMA user_version = 3;");
  Store store = Store::open(db_);
  EXPECT_EQ(store.stats().schema_version, kSchemaVersion);
  EXPECT_TRUE(store.load_projection()->tensors.empty());
  EXPECT_EQ(Searcher::load(store).project(questions(store), SearchOptions{}).data, before.data);
}

TEST_F(RoutingOptionsStore, BlendsMatchTheirDefinitions) {
  Store store = Store::open(db_);
  TeacherTrainOptions options;
  options.temperature = 0.05f;
  train_teacher(store, "synthetic", options);
  const Searcher searcher = Searcher::load(store);
  const Matrix queries = questions(store);
  SearchOptions plain;
  const Matrix teacher = searcher.project(queries, plain);
  SearchOptions zero = plain;
  zero.blend_questions = 0.0f;
  zero.blend_direct = 0.0f;
  EXPECT_EQ(searcher.project(queries, zero).data, teacher.data);

  // Direct blend: the ranking vector is normalise((1-g) p + g q), so its
  // cosine to every unit answer orders answers as (1-g) cos(p,a) + g cos(q,a).
  SearchOptions direct = plain;
  direct.blend_direct = 0.3f;
  const Matrix mixed = searcher.project(queries, direct), q = unit_rows(queries);
  for (std::size_t r = 0; r < q.rows; ++r) {
    std::vector<double> v(16);
    double norm = 0;
    for (std::size_t j = 0; j < 16; ++j) norm += (v[j] = 0.7 * teacher(r, j) + 0.3 * q(r, j)) * v[j];
    for (std::size_t j = 0; j < 16; ++j) ASSERT_NEAR(mixed(r, j), v[j] / std::sqrt(norm), 1e-5);
  }
  // Question blend: weights (1-b) teacher + b question routing, then answers.
  SearchOptions by_questions = plain;
  by_questions.method = Method::QuestionRouting;
  by_questions.routing_top = 12;
  SearchOptions teacher_routing = plain;
  teacher_routing.routing_top = 12;
  SearchOptions blend = plain;
  blend.blend_questions = 0.4f;
  blend.routing_top = 12;
  const auto qr = searcher.search(queries, by_questions);
  const auto tr = searcher.search(queries, teacher_routing);
  const auto bl = searcher.search(queries, blend);
  for (std::size_t r = 0; r < q.rows; ++r) {
    std::map<std::int64_t, double> expected;
    for (const RoutingEntry& e : tr[r].routing) expected[e.cluster_id] += 0.6 * e.weight;
    for (const RoutingEntry& e : qr[r].routing) expected[e.cluster_id] += 0.4 * e.weight;
    for (const RoutingEntry& e : bl[r].routing) ASSERT_NEAR(e.weight, expected[e.cluster_id], 1e-5);
  }
  blend.blend_questions = 1.0f;
  EXPECT_THROW(searcher.project(queries, blend), InputError);
}

}  // namespace
}  // namespace ldaproj
