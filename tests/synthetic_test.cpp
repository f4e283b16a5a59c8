// Synthetic data (deterministic, calibrated to the demo data, written as a
// normal store) and the crossover study on a small size.
#include <gtest/gtest.h>

#include <cmath>

#include "ldaproj/crossover.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/synthetic.hpp"
#include "ldaproj/train.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

struct Collected {
  Matrix questions{0, 384}, answers;
  std::vector<std::size_t> labels;
  std::vector<std::size_t> domains;
};

Collected collect(const SyntheticSpec& spec) {
  Collected c;
  c.answers = Matrix(spec.clusters, spec.dim);
  c.questions = Matrix(0, spec.dim);
  generate_synthetic(spec, [&](const SyntheticCluster& k) {
    c.questions.data.insert(c.questions.data.end(), k.questions.data.begin(), k.questions.data.end());
    c.questions.rows += k.questions.rows;
    c.labels.insert(c.labels.end(), k.questions.rows, k.index);
    std::copy(k.answer.begin(), k.answer.end(), c.answers.row(k.index));
    c.domains.push_back(k.domain);
  });
  return c;
}

TEST(Synthetic, DeterministicUnitRowsAndDomainsInRange) {
  SyntheticSpec spec;
  spec.clusters = 50;
  spec.questions_per_cluster = 3;
  spec.domains = 4;
  const Collected a = collect(spec), b = collect(spec);
  EXPECT_EQ(a.questions.data, b.questions.data);
  EXPECT_EQ(a.answers.data, b.answers.data);
  spec.seed = 2;
  EXPECT_NE(collect(spec).questions.data, a.questions.data);
  for (std::size_t i = 0; i < a.questions.rows; ++i) {
    double sq = 0;
    for (std::size_t j = 0; j < a.questions.cols; ++j) sq += double(a.questions(i, j)) * a.questions(i, j);
    EXPECT_NEAR(sq, 1.0, 1e-5);
  }
  for (std::size_t d : a.domains) EXPECT_LT(d, 4u);
}

// The default profile reproduces the demo data's statistics on a set shaped
// like it (one domain, 31 clusters, 9 questions), averaged over seeds.
TEST(Synthetic, CalibratedToTheDemoData) {
  SimilarityStats mean{};
  const int seeds = 4;
  for (int seed = 1; seed <= seeds; ++seed) {
    SyntheticSpec spec;
    spec.clusters = 31;
    spec.questions_per_cluster = 9;
    spec.domains = 1;
    spec.seed = static_cast<std::uint64_t>(seed);
    const Collected c = collect(spec);
    const SimilarityStats s = measure_similarity(c.questions, c.labels, c.answers);
    mean.intra_mean += s.intra_mean / seeds;
    mean.intra_std += s.intra_std / seeds;
    mean.inter_mean += s.inter_mean / seeds;
    mean.inter_std += s.inter_std / seeds;
    mean.answer_mean += s.answer_mean / seeds;
    mean.answer_std += s.answer_std / seeds;
    mean.nearest_mean += s.nearest_mean / seeds;
  }
  std::cout << "[ synth    ] " << describe(mean) << "\n[ demo     ] " << describe(kDemoSimilarity) << "\n";
  EXPECT_NEAR(mean.intra_mean, kDemoSimilarity.intra_mean, 0.05);
  EXPECT_NEAR(mean.inter_mean, kDemoSimilarity.inter_mean, 0.05);
  EXPECT_NEAR(mean.answer_mean, kDemoSimilarity.answer_mean, 0.05);
  EXPECT_NEAR(mean.nearest_mean, kDemoSimilarity.nearest_mean, 0.07);
}

class SyntheticStore : public testing_support::TempDirTest {};

TEST_F(SyntheticStore, WritesATrainableStoreAndNeverOverwrites) {
  SyntheticSpec spec;
  spec.clusters = 40;
  spec.questions_per_cluster = 5;
  spec.dim = 32;
  const std::string db = file("synth.db").string();
  write_synthetic_store(spec, db);
  {
    Store store = Store::open(db);
    EXPECT_EQ(store.clusters().size(), 40u);
    EXPECT_EQ(store.questions().size(), 200u);
    const auto model = store.find_model("synthetic");
    ASSERT_TRUE(model.has_value());
    EXPECT_EQ(store.embeddings(model->id, EntityKind::Question).ids.size(), 200u);
    EXPECT_EQ(store.embeddings(model->id, EntityKind::Answer).ids.size(), 40u);
    TeacherTrainOptions options;
    EXPECT_EQ(train_teacher(store, "synthetic", options).heads, 40u);
  }
  EXPECT_THROW(write_synthetic_store(spec, db), InputError);
  Store store = Store::open(db);
  EXPECT_EQ(store.clusters().size(), 40u);
}

// A synthetic store is also a quick way to exercise the Searcher with an
// approximate answer index and the sparse teacher.
TEST_F(SyntheticStore, SearcherWithApproximateAnswersAndSparseTeacher) {
  SyntheticSpec spec;
  spec.clusters = 400;
  spec.questions_per_cluster = 4;
  spec.dim = 32;
  const std::string db = file("synth.db").string();
  write_synthetic_store(spec, db);
  Store store = Store::open(db);
  train_teacher(store, "synthetic", TeacherTrainOptions{});
  const Searcher exact = Searcher::load(store);
  SearcherOptions approximate_options;
  approximate_options.approximate_answers_from = 1;
  const Searcher approximate = Searcher::load(store, {}, approximate_options);
  EXPECT_FALSE(exact.answer_index_is_approximate());
  ASSERT_TRUE(approximate.answer_index_is_approximate());
  Matrix queries(0, 32);
  generate_synthetic(spec, [&](const SyntheticCluster& c) {
    if (c.index % 20 == 0) {
      queries.data.insert(queries.data.end(), c.questions.row(0), c.questions.row(0) + 32);
      ++queries.rows;
    }
  });
  EXPECT_GE(approximate.answer_index_recall(queries, 10), 0.95);
  EXPECT_DOUBLE_EQ(exact.answer_index_recall(queries, 10), 1.0);
  SearchOptions options;
  options.method = Method::Direct;
  options.top_k = 3;
  const auto want = exact.search(queries, options), got = approximate.search(queries, options);
  for (std::size_t q = 0; q < want.size(); ++q) EXPECT_EQ(got[q].answers[0].cluster, want[q].answers[0].cluster);
  // Routing over every head, the sparse teacher answers like the dense one.
  options.route_k = 400;
  options.routing_top = 3;
  options.method = Method::MultiHead;
  const auto dense = exact.search(queries, options);
  options.method = Method::SparseTeacher;
  const auto sparse = exact.search(queries, options);
  for (std::size_t q = 0; q < dense.size(); ++q) {
    ASSERT_EQ(sparse[q].answers.size(), dense[q].answers.size());
    for (std::size_t i = 0; i < dense[q].answers.size(); ++i)
      EXPECT_EQ(sparse[q].answers[i].cluster, dense[q].answers[i].cluster);
    ASSERT_EQ(sparse[q].routing.size(), 3u);
    EXPECT_EQ(sparse[q].routing[0].cluster, dense[q].routing[0].cluster);
    EXPECT_NEAR(sparse[q].routing[0].weight, dense[q].routing[0].weight, 1e-4);
  }
}

TEST(Crossover, SparseWithEveryHeadAgreesWithDense) {
  CrossoverOptions o;
  o.clusters = {300};
  o.route_k = 300;
  o.queries = 16;
  o.latency_budget_seconds = 0.01;
  o.methods = {"dense-teacher", "sparse-teacher"};
  const auto results = run_crossover(o);
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_EQ(r.clusters, 300u);
    EXPECT_NEAR(r.top10_overlap, 1.0, 1e-9) << r.method;
    EXPECT_NEAR(r.recall_at_1, results[0].recall_at_1, 1e-9) << r.method;
    EXPECT_NEAR(r.mean_cosine, 1.0, 1e-4) << r.method;
    EXPECT_GT(r.p50_us, 0.0);
    EXPECT_GE(r.p99_us, r.p50_us);
    EXPECT_GT(r.qps_batch, 0.0);
    EXPECT_GT(r.memory_bytes, 300u * 384 * 4);
  }
  // Held-out queries mostly find their own cluster (the labels line up with the heads).
  EXPECT_GT(results[0].recall_at_1, 0.3);
  const auto advice = recommend(results);
  ASSERT_EQ(advice.size(), 1u);
  const std::string svg = crossover_svg(results);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  EXPECT_NE(svg.find("sparse-teacher"), std::string::npos);
  o.methods = {"no-such-method"};
  EXPECT_THROW(run_crossover(o), InputError);
}

TEST(Crossover, LearnedMethodsAreMeasuredLikeTheOthers) {
  CrossoverOptions o;
  o.clusters = {200};
  o.queries = 8;
  o.latency_budget_seconds = 0.01;
  o.training_questions = 400;
  o.student.epochs = 1;
  o.student.data.samples = 128;
  o.student.config.keys_per_head = 2;
  o.domains = 2;
  o.threads = 1;
  o.methods = {"student", "ensemble", "student-matched"};
  const auto results = run_crossover(o);
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) {
    EXPECT_GE(r.top10_overlap, 0.0) << r.method;
    EXPECT_LE(r.top10_overlap, 1.0) << r.method;
    EXPECT_GT(r.mean_cosine, 0.0) << r.method;
    EXPECT_GT(r.memory_bytes, 0u) << r.method;
  }
  // The matched student has the ensemble's parameter budget, give or take a few keys.
  const double ensemble = double(results[1].memory_bytes), matched = double(results[2].memory_bytes);
  EXPECT_NEAR(matched / ensemble, 1.0, 0.01);
  EXPECT_GT(ensemble, 1.5 * double(results[0].memory_bytes));
  o.training_questions = 0;
  EXPECT_THROW(run_crossover(o), InputError);
}

}  // namespace
}  // namespace ldaproj
