// The HNSW index against exact search, and the sparse teacher against the
// dense one.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "ldaproj/error.hpp"
#include "ldaproj/index.hpp"
#include "ldaproj/teacher.hpp"
#include "teacher_reference.hpp"

namespace ldaproj {
namespace {

using testing_support::random_matrix;

Matrix unit_random(std::size_t rows, std::size_t cols, unsigned seed) {
  Matrix m = random_matrix(rows, cols, seed);
  normalize_rows(m, "row");
  return m;
}

std::vector<std::int64_t> iota_labels(std::size_t n, std::int64_t offset = 0) {
  std::vector<std::int64_t> labels(n);
  for (std::size_t i = 0; i < n; ++i) labels[i] = offset + static_cast<std::int64_t>(i);
  return labels;
}

TEST(HnswIndex, RecallAgainstExactSearch) {
  const Matrix data = unit_random(3000, 48, 1), queries = unit_random(100, 48, 2);
  FlatIndex exact(48);
  exact.add(data, iota_labels(data.rows, 1000));
  HnswIndex approx(48, {.m = 16, .ef_construction = 200, .ef_search = 128, .seed = 7, .threads = 2});
  // Two batches, to exercise growing the graph.
  Matrix first(1500, 48), second(1500, 48);
  std::copy(data.data.begin(), data.data.begin() + 1500 * 48, first.data.begin());
  std::copy(data.data.begin() + 1500 * 48, data.data.end(), second.data.begin());
  approx.add(first, iota_labels(1500, 1000));
  approx.add(second, iota_labels(1500, 2500));
  ASSERT_EQ(approx.size(), 3000u);
  const auto want = exact.search(queries, 10), got = approx.search(queries, 10);
  const double recall = recall_at_k(want, got, 10);
  std::cout << "[ hnsw     ] recall@10 on 3000 random 48-d vectors: " << recall << "\n";
  EXPECT_GE(recall, 0.95);
  for (std::size_t q = 0; q < got.size(); ++q) {
    ASSERT_EQ(got[q].size(), 10u);
    for (std::size_t i = 1; i < got[q].size(); ++i) EXPECT_GE(got[q][i - 1].score, got[q][i].score);
    // Scores are true inner products of the returned vectors.
    const float* v = data.row(static_cast<std::size_t>(got[q][0].label - 1000));
    double dot = 0;
    for (std::size_t j = 0; j < 48; ++j) dot += double(v[j]) * queries(q, j);
    EXPECT_NEAR(got[q][0].score, dot, 1e-5);
  }
  EXPECT_GT(approx.memory_bytes(), 3000u * 48 * sizeof(float));
}

TEST(HnswIndex, SmallAndBadInputs) {
  HnswIndex index(4);
  EXPECT_TRUE(index.search(unit_random(1, 4, 3), 5)[0].empty());  // empty index
  index.add(unit_random(3, 4, 4), {7, 8, 9});
  EXPECT_EQ(index.search(unit_random(1, 4, 5), 10)[0].size(), 3u);  // k capped at size
  EXPECT_THROW(index.add(unit_random(2, 5, 6), {1, 2}), InputError);
  EXPECT_THROW(index.add(unit_random(2, 4, 6), {1}), InputError);
  EXPECT_THROW(index.search(unit_random(1, 5, 6), 1), InputError);
  EXPECT_THROW(HnswIndex(0), InputError);
}

TEST(RecallAtK, CountsSharedLabels) {
  const std::vector<std::vector<Hit>> exact{{{1, 0.9f}, {2, 0.8f}}, {{3, 0.5f}, {4, 0.4f}}};
  const std::vector<std::vector<Hit>> approx{{{2, 0.8f}, {1, 0.9f}}, {{3, 0.5f}, {5, 0.1f}}};
  EXPECT_DOUBLE_EQ(recall_at_k(exact, approx, 2), 0.75);
  EXPECT_DOUBLE_EQ(recall_at_k(exact, approx, 1), 0.5);  // query 1 has label 2 first
}

TEST(SparseTeacher, AllHeadsEqualsDenseTeacher) {
  for (std::size_t heads : {1u, 5u, 200u}) {
    const Matrix c = random_matrix(heads, 32, 10 + heads), a = random_matrix(heads, 32, 20 + heads);
    const Matrix q = random_matrix(7, 32, 30);
    const MultiHeadProjection dense(c, a, 0.1f);
    const SparseMultiHeadProjection sparse(dense, {.m = 16, .ef_construction = 400, .ef_search = 400});
    for (float tau : {0.05f, 0.1f, 1.0f}) {
      std::vector<SparseRouting> routes;
      const Matrix ps = sparse.project(q, tau, heads + 10, &routes), pd = dense.project(q, tau);
      for (std::size_t k = 0; k < pd.data.size(); ++k) EXPECT_NEAR(ps.data[k], pd.data[k], 1e-5) << heads << " " << tau;
      for (const SparseRouting& r : routes) {
        EXPECT_EQ(r.heads.size(), heads);
        EXPECT_FLOAT_EQ(r.uncovered_mass_bound, 0.0f);
      }
    }
  }
}

TEST(SparseTeacher, UncoveredMassBoundHoldsAndShrinksWithK) {
  const std::size_t heads = 500;
  const Matrix c = random_matrix(heads, 32, 41), a = random_matrix(heads, 32, 42);
  Matrix q = random_matrix(20, 32, 43);
  for (std::size_t i = 0; i < q.rows; ++i)
    for (std::size_t j = 0; j < 32; ++j) q(i, j) = 0.2f * q(i, j) + c(i * 13, j);
  const MultiHeadProjection dense(c, a, 0.1f);
  const SparseMultiHeadProjection sparse(dense, {.m = 16, .ef_construction = 400, .ef_search = 500});
  Matrix weights;
  dense.project(q, 0.05f, &weights);
  double previous_mean = 2.0;
  for (std::size_t k : {4u, 16u, 64u}) {
    std::vector<SparseRouting> routes;
    sparse.project(q, 0.05f, k, &routes);
    double mean = 0;
    for (std::size_t i = 0; i < q.rows; ++i) {
      double covered = 0;
      for (std::size_t h : routes[i].heads) covered += weights(i, h);
      EXPECT_GE(routes[i].uncovered_mass_bound + 1e-5, 1.0 - covered) << "k " << k << " query " << i;
      // With a large beam the graph finds the exact top heads here.
      std::vector<float> w(weights.row(i), weights.row(i) + heads);
      std::sort(w.begin(), w.end(), std::greater<>());
      double best = 0;
      for (std::size_t j = 0; j < k; ++j) best += w[j];
      EXPECT_NEAR(covered, best, 1e-4);
      mean += routes[i].uncovered_mass_bound;
    }
    mean /= double(q.rows);
    EXPECT_LE(mean, previous_mean);
    previous_mean = mean;
  }
}

TEST(SparseTeacher, BadArguments) {
  const MultiHeadProjection dense(random_matrix(10, 8, 1), random_matrix(10, 8, 2));
  const SparseMultiHeadProjection sparse(dense);
  EXPECT_THROW(sparse.project(random_matrix(1, 8, 3), 0.1f, 0), InputError);
  EXPECT_THROW(sparse.project(random_matrix(1, 9, 3), 0.1f, 4), InputError);
  EXPECT_THROW(sparse.project(random_matrix(1, 8, 3), 0.0f, 4), InputError);
  EXPECT_THROW(sparse.project(Matrix(1, 8), 0.1f, 4), InputError);  // zero query
}

}  // namespace
}  // namespace ldaproj
