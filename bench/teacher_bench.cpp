// Teacher routing + projection throughput: batch 1 and batch 256 over n heads
// (d = 384), against a naive loop baseline measured in the same run.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>

#include "ldaproj/teacher.hpp"

namespace {

ldaproj::Matrix random_matrix(std::size_t rows, std::size_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  ldaproj::Matrix m(rows, cols);
  for (float& v : m.data) v = dist(rng);
  return m;
}

constexpr std::size_t kDim = 384;

void BM_TeacherProject(benchmark::State& state) {
  const auto heads = static_cast<std::size_t>(state.range(0));
  const auto batch = static_cast<std::size_t>(state.range(1));
  ldaproj::MultiHeadProjection mh(random_matrix(heads, kDim, 1), random_matrix(heads, kDim, 2));
  const ldaproj::Matrix q = random_matrix(batch, kDim, 3);
  for (auto _ : state) benchmark::DoNotOptimize(mh.project(q).data.data());
  const double flops = 4.0 * double(heads) * kDim * double(batch);  // two GEMMs
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));  // queries/s
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Baseline: the definition as plain loops (what a first implementation does).
void BM_TeacherNaive(benchmark::State& state) {
  const auto heads = static_cast<std::size_t>(state.range(0));
  const auto batch = static_cast<std::size_t>(state.range(1));
  ldaproj::Matrix c = random_matrix(heads, kDim, 1), a = random_matrix(heads, kDim, 2);
  ldaproj::normalize_rows(c, "centroid");
  ldaproj::normalize_rows(a, "answer");
  ldaproj::Matrix q = random_matrix(batch, kDim, 3);
  ldaproj::normalize_rows(q, "query");
  std::vector<float> s(heads), p(kDim);
  for (auto _ : state) {
    for (std::size_t b = 0; b < batch; ++b) {
      for (std::size_t h = 0; h < heads; ++h) {
        float dot = 0;
        for (std::size_t j = 0; j < kDim; ++j) dot += q(b, j) * c(h, j);
        s[h] = dot;
      }
      ldaproj::softmax_inplace(s.data(), heads, 0.1f);
      std::fill(p.begin(), p.end(), 0.0f);
      for (std::size_t h = 0; h < heads; ++h)
        for (std::size_t j = 0; j < kDim; ++j) p[j] += s[h] * a(h, j);
      benchmark::DoNotOptimize(p.data());
    }
  }
  const double flops = 4.0 * double(heads) * kDim * double(batch);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void Sizes(benchmark::internal::Benchmark* b) {
  for (long n : {1000L, 10000L, 100000L})
    for (long batch : {1L, 256L}) b->Args({n, batch});
  b->ArgNames({"heads", "batch"})->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_TeacherProject)->Apply(Sizes);
BENCHMARK(BM_TeacherNaive)->Apply(Sizes);

}  // namespace

BENCHMARK_MAIN();
