// Teacher kernels against slow, obvious implementations and known values.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "ldaproj/error.hpp"
#include "ldaproj/index.hpp"
#include "ldaproj/teacher.hpp"
#include "teacher_reference.hpp"

namespace ldaproj {
namespace {

using testing_support::random_matrix;
using testing_support::reference_projection;
using testing_support::unit;

TEST(Teacher, ProjectionMatchesReference) {
  for (std::size_t heads : {1u, 2u, 7u, 33u, 257u}) {
    const Matrix c = random_matrix(heads, 24, 1 + heads), a = random_matrix(heads, 24, 2 + heads);
    const Matrix q = random_matrix(9, 24, 3 + heads);
    MultiHeadProjection mh(c, a, 0.1f);
    for (float tau : {0.05f, 0.1f, 1.0f}) {
      Matrix w;
      const Matrix p = mh.project(q, tau, &w);
      ASSERT_EQ(p.rows, q.rows);
      ASSERT_EQ(w.cols, heads);
      for (std::size_t i = 0; i < q.rows; ++i) {
        std::vector<double> ref_w;
        const auto ref = reference_projection(c, a, q.row(i), tau, &ref_w);
        for (std::size_t j = 0; j < p.cols; ++j) EXPECT_NEAR(p(i, j), ref[j], 2e-5) << heads << " " << tau;
        for (std::size_t h = 0; h < heads; ++h) EXPECT_NEAR(w(i, h), ref_w[h], 2e-5);
      }
    }
  }
}

TEST(Teacher, WeightsSumToOneAtExtremeTemperatures) {
  const Matrix c = random_matrix(50, 16, 7), a = random_matrix(50, 16, 8), q = random_matrix(5, 16, 9);
  MultiHeadProjection mh(c, a);
  for (float tau : {0.001f, 0.01f, 100.0f}) {
    const Matrix w = mh.routing_weights(q, tau);
    for (std::size_t i = 0; i < w.rows; ++i) {
      double sum = 0;
      for (std::size_t h = 0; h < w.cols; ++h) {
        ASSERT_TRUE(std::isfinite(w(i, h))) << tau;
        ASSERT_GE(w(i, h), 0.0f);
        sum += w(i, h);
      }
      EXPECT_NEAR(sum, 1.0, 1e-5) << tau;
    }
    const Matrix p = mh.project(q, tau);
    for (float v : p.data) ASSERT_TRUE(std::isfinite(v)) << tau;
  }
  // Very low temperature: all weight on the most similar head.
  const Matrix scores = mh.route_scores(q);
  const Matrix sharp = mh.routing_weights(q, 0.001f);
  for (std::size_t i = 0; i < q.rows; ++i) {
    const auto best = std::max_element(scores.row(i), scores.row(i) + scores.cols) - scores.row(i);
    EXPECT_GT(sharp(i, static_cast<std::size_t>(best)), 0.99f);
  }
  // Very high temperature: close to uniform.
  const Matrix flat = mh.routing_weights(q, 100.0f);
  for (float v : flat.data) EXPECT_NEAR(v, 1.0f / 50, 1e-3);
}

TEST(Teacher, TiesSplitWeightEvenly) {
  Matrix c(3, 2), a(3, 2), q(1, 2);
  c(0, 0) = 1; c(1, 0) = 1; c(2, 1) = 1;  // heads 0 and 1 identical
  a(0, 0) = 1; a(1, 1) = 1; a(2, 0) = -1;
  q(0, 0) = 1;
  MultiHeadProjection mh(c, a, 0.1f);
  const Matrix w = mh.routing_weights(q, 0.1f);
  EXPECT_FLOAT_EQ(w(0, 0), w(0, 1));
  EXPECT_NEAR(w(0, 0) + w(0, 1) + w(0, 2), 1.0f, 1e-6);
}

TEST(Teacher, SingleHeadProjectsOntoItsAnswer) {
  const Matrix c = random_matrix(1, 8, 1), a = random_matrix(1, 8, 2), q = random_matrix(4, 8, 3);
  MultiHeadProjection mh(c, a);
  const Matrix p = mh.project(q);
  const auto an = unit(a.row(0), 8);
  for (std::size_t i = 0; i < 4; ++i)
    for (std::size_t j = 0; j < 8; ++j) EXPECT_NEAR(p(i, j), an[j], 1e-6);
}

TEST(Teacher, ZeroVectorsAreClearErrors) {
  const Matrix c = random_matrix(3, 4, 1), a = random_matrix(3, 4, 2);
  MultiHeadProjection mh(c, a);
  Matrix q(2, 4);
  q(0, 0) = 1;
  try {
    (void)mh.project(q);
    FAIL() << "zero query accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("query #1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("zero vector"), std::string::npos) << e.what();
  }
  Matrix zero_c = c;
  std::fill(zero_c.row(1), zero_c.row(1) + 4, 0.0f);
  EXPECT_THROW(MultiHeadProjection(zero_c, a), InputError);
  Matrix nan_q = random_matrix(1, 4, 5);
  nan_q(0, 2) = std::nanf("");
  EXPECT_THROW((void)mh.project(nan_q), InputError);
  EXPECT_THROW((void)mh.project(random_matrix(1, 5, 1)), InputError);  // wrong dimension
  EXPECT_THROW((void)mh.routing_weights(random_matrix(1, 4, 1), 0.0f), InputError);
  EXPECT_THROW((void)mh.routing_weights(random_matrix(1, 4, 1), -1.0f), InputError);
  EXPECT_THROW(MultiHeadProjection(random_matrix(3, 4, 1), random_matrix(2, 4, 1)), InputError);
}

TEST(Teacher, SoftmaxIsStableForHugeScores) {
  std::vector<float> s = {1000.0f, 999.0f, -1000.0f};
  softmax_inplace(s.data(), s.size(), 0.001f);
  EXPECT_FLOAT_EQ(s[0], 1.0f);
  EXPECT_FLOAT_EQ(s[1], 0.0f);
  EXPECT_FLOAT_EQ(s[2], 0.0f);
  std::vector<float> t = {0.5f, 0.5f};
  softmax_inplace(t.data(), t.size(), 0.1f);
  EXPECT_FLOAT_EQ(t[0], 0.5f);
}

TEST(Centroid, MeanIsNormalisedMeanOfUnitRows) {
  Matrix q(2, 2);
  q(0, 0) = 3;  // normalised to (1, 0)
  q(1, 1) = 0.5f;  // normalised to (0, 1)
  const auto c = compute_centroid(q, CentroidMethod::Mean);
  EXPECT_NEAR(c[0], std::sqrt(0.5), 1e-6);
  EXPECT_NEAR(c[1], std::sqrt(0.5), 1e-6);
}

TEST(Centroid, ReweightedMatchesHandIteration) {
  const Matrix q = random_matrix(6, 5, 11);
  // Three rounds of softmax(q.c) weights, written out directly.
  std::vector<std::vector<double>> rows;
  for (std::size_t i = 0; i < q.rows; ++i) rows.push_back(unit(q.row(i), q.cols));
  std::vector<double> w(q.rows, 1.0 / q.rows), c(q.cols);
  auto remake = [&] {
    std::fill(c.begin(), c.end(), 0.0);
    for (std::size_t i = 0; i < q.rows; ++i)
      for (std::size_t j = 0; j < q.cols; ++j) c[j] += w[i] * rows[i][j];
    double n = 0;
    for (double v : c) n += v * v;
    for (double& v : c) v /= std::sqrt(n);
  };
  remake();
  for (int round = 0; round < 3; ++round) {
    double sum = 0;
    for (std::size_t i = 0; i < q.rows; ++i) {
      double dot = 0;
      for (std::size_t j = 0; j < q.cols; ++j) dot += rows[i][j] * c[j];
      sum += (w[i] = std::exp(dot));
    }
    for (double& v : w) v /= sum;
    remake();
  }
  const auto got = compute_centroid(q, CentroidMethod::Reweighted, 3);
  for (std::size_t j = 0; j < q.cols; ++j) EXPECT_NEAR(got[j], c[j], 1e-5);
  EXPECT_THROW(compute_centroid(Matrix(0, 5), CentroidMethod::Mean), InputError);
  EXPECT_EQ(parse_centroid_method("reweighted"), CentroidMethod::Reweighted);
  EXPECT_THROW(parse_centroid_method("median"), InputError);
}

TEST(GlobalProjection, RecoversAnExactLinearMap) {
  // Answers made by a known invertible map M from centroids: with enough
  // centroids to span the space and tiny regularisation W must equal M.
  const std::size_t d = 6;
  const Matrix m = random_matrix(d, d, 21);
  const Matrix c = random_matrix(40, d, 22);
  Matrix a(40, d);
  for (std::size_t i = 0; i < 40; ++i)
    for (std::size_t r = 0; r < d; ++r)
      for (std::size_t k = 0; k < d; ++k) a(i, r) += m(r, k) * c(i, k);
  const GlobalProjection g = GlobalProjection::fit(c, a, Matrix(0, d), 1.0, 1e-9);
  for (std::size_t r = 0; r < d; ++r)
    for (std::size_t k = 0; k < d; ++k) EXPECT_NEAR(g.weights()(r, k), m(r, k), 1e-3);
  const Matrix q = random_matrix(3, d, 23);
  const Matrix p = g.project(q);
  for (std::size_t i = 0; i < 3; ++i) {
    std::vector<double> expect(d, 0.0);
    const auto qn = unit(q.row(i), d);
    for (std::size_t r = 0; r < d; ++r)
      for (std::size_t k = 0; k < d; ++k) expect[r] += m(r, k) * qn[k];
    double n = 0;
    for (double v : expect) n += v * v;
    for (std::size_t r = 0; r < d; ++r) EXPECT_NEAR(p(i, r), expect[r] / std::sqrt(n), 1e-3);
  }
}

TEST(FlatIndex, MatchesBruteForceOrder) {
  const Matrix base = random_matrix(100, 12, 31), q = random_matrix(7, 12, 32);
  std::vector<std::int64_t> labels(100);
  for (int i = 0; i < 100; ++i) labels[i] = 1000 + i;
  FlatIndex index(12);
  index.add(base, labels);
  const auto hits = index.search(q, 10);
  for (std::size_t i = 0; i < q.rows; ++i) {
    std::vector<std::pair<double, int>> all;
    for (int b = 0; b < 100; ++b) {
      double dot = 0;
      for (int j = 0; j < 12; ++j) dot += double(q(i, j)) * base(b, j);
      all.emplace_back(-dot, b);
    }
    std::sort(all.begin(), all.end());
    ASSERT_EQ(hits[i].size(), 10u);
    for (int r = 0; r < 10; ++r) {
      EXPECT_EQ(hits[i][r].label, 1000 + all[r].second);
      EXPECT_NEAR(hits[i][r].score, -all[r].first, 1e-4);
    }
  }
  EXPECT_EQ(index.search(q, 500)[0].size(), 100u);
  EXPECT_THROW(index.add(random_matrix(1, 5, 1), {1}), InputError);
  EXPECT_THROW(index.add(random_matrix(2, 12, 1), {1}), InputError);
}

}  // namespace
}  // namespace ldaproj
