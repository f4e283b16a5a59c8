// The fast teacher paths (streaming one query, GEMM over head blocks, scalar
// and AVX-512, several threads, reduced precision) against the definition.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <numeric>
#include <set>
#include <stdexcept>
#include <thread>

#include "common/parallel.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"
#include "teacher/head_storage.hpp"
#include "teacher/routing_kernels.hpp"
#include "teacher_reference.hpp"

namespace ldaproj {
namespace {

using testing_support::random_matrix;
using testing_support::reference_projection;

double max_abs_diff(const float* got, const std::vector<double>& want) {
  double worst = 0;
  for (std::size_t j = 0; j < want.size(); ++j) worst = std::max(worst, std::fabs(got[j] - want[j]));
  return worst;
}

// Head counts that are not multiples of any block (kernel 64, GEMM 512,
// four-row groups) next to ones that are, n = 1, and one large enough to be
// split over threads.
constexpr std::size_t kHeadCounts[] = {1, 3, 63, 64, 65, 511, 513, 1000, 20011};

TEST(TeacherKernels, EveryPathMatchesReference) {
  for (std::size_t dim : {16u, 24u, 384u}) {  // 24 is not a multiple of 16: the scalar kernel
    for (std::size_t heads : kHeadCounts) {
      if (heads > 2000 && dim != 384) continue;
      const Matrix c = random_matrix(heads, dim, 11 + static_cast<unsigned>(heads));
      const Matrix a = random_matrix(heads, dim, 12 + static_cast<unsigned>(heads));
      const Matrix q = random_matrix(5, dim, 13);
      for (int threads : {1, 3}) {
        MultiHeadProjection mh(c, a, 0.1f, {Precision::F32, threads});
        for (float tau : {0.02f, 0.1f, 1.0f}) {
          Matrix w_batch;
          const Matrix p_batch = mh.project(q, tau, &w_batch);  // GEMM path
          for (std::size_t i = 0; i < q.rows; ++i) {
            Matrix one(1, dim);
            std::copy(q.row(i), q.row(i) + dim, one.row(0));
            Matrix w_one;
            const Matrix p_one = mh.project(one, tau, &w_one);  // streaming path
            std::vector<double> ref_w;
            const auto ref = reference_projection(c, a, q.row(i), tau, &ref_w);
            SCOPED_TRACE(::testing::Message() << "dim " << dim << " heads " << heads << " threads " << threads
                                              << " tau " << tau << " query " << i);
            EXPECT_LE(max_abs_diff(p_one.row(0), ref), 1e-5);
            EXPECT_LE(max_abs_diff(p_batch.row(i), ref), 1e-5);
            EXPECT_LE(max_abs_diff(w_one.row(0), ref_w), 1e-5);
            EXPECT_LE(max_abs_diff(w_batch.row(i), ref_w), 1e-5);
          }
        }
      }
    }
  }
}

TEST(TeacherKernels, ProjectWithoutWeightsEqualsProjectWithWeights) {
  const Matrix c = random_matrix(700, 384, 1), a = random_matrix(700, 384, 2), q = random_matrix(3, 384, 3);
  MultiHeadProjection mh(c, a);
  Matrix w;
  const Matrix with = mh.project(q, 0.1f, &w), without = mh.project(q, 0.1f);
  for (std::size_t k = 0; k < with.data.size(); ++k) EXPECT_FLOAT_EQ(with.data[k], without.data[k]);
}

// The scalar kernel is what portable builds and odd dimensions use; check it
// and the AVX-512 kernel directly, over split ranges merged afterwards.
TEST(TeacherKernels, ScalarAndAvx512KernelsAgreeAcrossSplits) {
  const std::size_t heads = 1000, dim = 384;
  Matrix c = random_matrix(heads, dim, 5), a = random_matrix(heads, dim, 6), q = random_matrix(1, dim, 7);
  normalize_rows(c, "c");
  normalize_rows(a, "a");
  normalize_rows(q, "q");
  const float inv_t = 10.0f;
  std::vector<detail::Isa> isas{detail::Isa::Scalar};
  if (detail::best_isa(dim) == detail::Isa::Avx512) isas.push_back(detail::Isa::Avx512);
  else std::cout << "[ kernels  ] this CPU has no AVX-512: scalar kernel only\n";
  const auto ref = reference_projection(c, a, q.row(0), 1.0 / inv_t);
  for (Precision precision : {Precision::F32, Precision::BF16, Precision::I8}) {
    const detail::HeadRows hc(c, precision), ha(a, precision);
    std::vector<float> first_scores;
    for (detail::Isa isa : isas) {
      for (std::size_t split : {std::size_t{0}, std::size_t{1}, std::size_t{64}, std::size_t{333}, heads}) {
        detail::OnlineSoftmax left(dim), right(dim);
        std::vector<float> scores(heads);
        detail::stream_heads(isa, hc, ha, q.row(0), inv_t, 0, split, scores.data(), left);
        detail::stream_heads(isa, hc, ha, q.row(0), inv_t, split, heads, scores.data(), right);
        left.merge(right, inv_t);
        std::vector<float> p(left.acc);
        double norm = 0;
        for (float v : p) norm += double(v) * v;
        for (float& v : p) v = static_cast<float>(v / std::sqrt(norm));
        const double tolerance = precision == Precision::F32 ? 1e-5 : precision == Precision::BF16 ? 5e-3 : 2e-2;
        SCOPED_TRACE(::testing::Message() << to_string(precision) << " isa " << int(isa) << " split " << split);
        EXPECT_LE(max_abs_diff(p.data(), ref), tolerance);
        if (first_scores.empty()) {
          first_scores = scores;
        } else {
          for (std::size_t h = 0; h < heads; ++h) ASSERT_NEAR(scores[h], first_scores[h], 1e-5);
        }
      }
    }
  }
}

TEST(TeacherKernels, VectorExpMatchesStdExp) {
  std::vector<float> x(1000);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = -100.0f * static_cast<float>(i) / 999.0f;
  for (detail::Isa isa : {detail::Isa::Scalar, detail::best_isa(16)}) {
    for (std::size_t n : {std::size_t{1}, std::size_t{15}, std::size_t{17}, x.size()}) {
      std::vector<float> y(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(n));
      const double sum = detail::exp_shifted(isa, y.data(), n, 0.5f, 2.0f);
      double want_sum = 0;
      for (std::size_t i = 0; i < n; ++i) {
        // The argument is rounded to float by both versions; compare exp itself.
        const float argument = (x[i] - 0.5f) * 2.0f;
        const double want = std::exp(double(argument));
        want_sum += want;
        EXPECT_NEAR(y[i], want, want * 1e-6 + 1e-37) << i;
      }
      EXPECT_NEAR(sum, want_sum, want_sum * 1e-6);
    }
  }
}

TEST(TeacherKernels, ReducedPrecisionStaysCloseAndKeepsTopAnswers) {
  const std::size_t heads = 4096, dim = 384;
  const Matrix c = random_matrix(heads, dim, 21), a = random_matrix(heads, dim, 22);
  // Queries near some centroids, so routing is peaked as on real data.
  Matrix q = random_matrix(16, dim, 23);
  for (std::size_t i = 0; i < q.rows; ++i)
    for (std::size_t j = 0; j < dim; ++j) q(i, j) = 0.3f * q(i, j) + c(i * 97, j);
  const MultiHeadProjection exact(c, a, 0.1f);
  const Matrix p_exact = exact.project(q);
  for (Precision precision : {Precision::BF16, Precision::I8}) {
    const MultiHeadProjection reduced(c, a, 0.1f, {precision, 0});
    EXPECT_LT(reduced.storage_bytes(), exact.storage_bytes() / (precision == Precision::BF16 ? 1.9 : 3.5));
    const Matrix p = reduced.project(q);
    double worst = 1.0;
    for (std::size_t i = 0; i < q.rows; ++i) {
      double dot = 0;
      for (std::size_t j = 0; j < dim; ++j) dot += double(p(i, j)) * p_exact(i, j);
      worst = std::min(worst, dot);
    }
    std::cout << "[ kernels  ] " << to_string(precision) << ": min cosine to fp32 projection " << worst << "\n";
    EXPECT_GT(worst, precision == Precision::BF16 ? 0.9999 : 0.999);
  }
}

TEST(TeacherKernels, Bf16RoundsToNearestEven) {
  EXPECT_EQ(detail::to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(detail::from_bf16(detail::to_bf16(-2.5f)), -2.5f);
  // 1 + 2^-8 is exactly between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(detail::from_bf16(detail::to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(detail::from_bf16(detail::to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
}

TEST(TeacherKernels, PrecisionNamesRoundTrip) {
  for (Precision p : {Precision::F32, Precision::BF16, Precision::I8}) EXPECT_EQ(parse_precision(to_string(p)), p);
  EXPECT_THROW(parse_precision("fp8"), InputError);
}

TEST(ParallelFor, RunsEveryTaskOnceFromConcurrentCallers) {
  std::vector<std::thread> callers;
  std::atomic<int> failures{0};
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      for (int round = 0; round < 50; ++round) {
        std::vector<std::atomic<int>> hits(37);
        detail::parallel_for(hits.size(), 4, [&](std::size_t i) { hits[i].fetch_add(1); });
        for (auto& h : hits)
          if (h.load() != 1) failures.fetch_add(1);
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(ParallelFor, RethrowsATaskError) {
  EXPECT_THROW(detail::parallel_for(8, 4, [](std::size_t i) {
    if (i == 5) throw std::runtime_error("task 5");
  }), std::runtime_error);
}

}  // namespace
}  // namespace ldaproj
