// Teacher routing + projection at d = 384 over n heads, batch 1 and batch 256,
// fp32 / bf16 / int8 storage, 1 thread and every core. Every figure is also
// given as a fraction of this machine's limits measured in the same process
// (sgemm peak for batches, memory bandwidth for one query); reduced precision
// also reports top-10 overlap with fp32. The NumPy and PyTorch versions of the
// same computation are bench/teacher_peers.py; bench/teacher_compare.sh runs
// everything in one go (make bench).
//
//   teacher_bench [--heads=1000,10000,100000,1000000] [Google Benchmark flags]
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "ldaproj/teacher.hpp"
#include "machine_limits.hpp"

namespace {

using ldaproj::Matrix;
using ldaproj::MultiHeadProjection;
using ldaproj::Precision;

constexpr std::size_t kDim = 384;
constexpr std::size_t kQueries = 256;

// Deterministic, fast fill (a 1M-head set is 768M values).
void fill_uniform(Matrix& m, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : m.data) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = static_cast<float>(static_cast<std::int64_t>(x >> 40) - (1ll << 23)) / float(1 << 23);
  }
}

// Heads (unit centroids and answers) and queries that sit near some of the
// centroids, as real queries do, so routing is peaked rather than uniform.
struct HeadSet {
  Matrix centroids, answers, queries;
};

const HeadSet& head_set(std::size_t heads) {
  static std::map<std::size_t, std::unique_ptr<HeadSet>> cache;
  auto& slot = cache[heads];
  if (!slot) {
    cache.clear();  // one size at a time: the 1M set alone is 3 GB
    auto& fresh = cache[heads];
    fresh = std::make_unique<HeadSet>();
    HeadSet& s = *fresh;
    s.centroids = Matrix(heads, kDim);
    s.answers = Matrix(heads, kDim);
    s.queries = Matrix(kQueries, kDim);
    fill_uniform(s.centroids, 1 + heads);
    fill_uniform(s.answers, 2 + heads);
    fill_uniform(s.queries, 3 + heads);
    ldaproj::normalize_rows(s.centroids, "centroid");
    ldaproj::normalize_rows(s.answers, "answer");
    for (std::size_t i = 0; i < kQueries; ++i) {
      const float* c = s.centroids.row((i * 7919) % heads);
      for (std::size_t j = 0; j < kDim; ++j) s.queries(i, j) = c[j] + 0.05f * s.queries(i, j);
    }
    ldaproj::normalize_rows(s.queries, "query");
    return s;
  }
  return *slot;
}

std::vector<std::size_t> top_answers(const Matrix& answers, const float* p, std::size_t k) {
  std::vector<float> scores(answers.rows);
  cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(answers.rows), static_cast<int>(answers.cols), 1.0f,
              answers.data.data(), static_cast<int>(answers.cols), p, 1, 0.0f, scores.data(), 1);
  std::vector<std::size_t> order(answers.rows);
  std::iota(order.begin(), order.end(), 0);
  k = std::min(k, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                    [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
  order.resize(k);
  return order;
}

// Mean top-10 overlap and minimum cosine of reduced-precision projections
// with the fp32 ones, answers ranked by cosine to the projection.
void accuracy_vs_fp32(const HeadSet& s, const MultiHeadProjection& reduced, benchmark::State& state) {
  Matrix q(64, kDim);
  std::copy(s.queries.data.begin(), s.queries.data.begin() + 64 * kDim, q.data.begin());
  const MultiHeadProjection exact(s.centroids, s.answers);
  const Matrix pe = exact.project(q), pr = reduced.project(q);
  double overlap = 0, min_cos = 1;
  for (std::size_t i = 0; i < q.rows; ++i) {
    const auto a = top_answers(s.answers, pe.row(i), 10), b = top_answers(s.answers, pr.row(i), 10);
    const std::set<std::size_t> want(a.begin(), a.end());
    overlap += double(std::count_if(b.begin(), b.end(), [&](std::size_t x) { return want.count(x) > 0; })) / 10.0;
    double dot = 0;
    for (std::size_t j = 0; j < kDim; ++j) dot += double(pe(i, j)) * pr(i, j);
    min_cos = std::min(min_cos, dot);
  }
  state.counters["top10_overlap"] = overlap / double(q.rows);
  state.counters["min_cosine"] = min_cos;
}

std::map<int, ldaproj::bench::MachineLimits> g_limits;

void BM_Teacher(benchmark::State& state) {
  const auto heads = static_cast<std::size_t>(state.range(0));
  const auto batch = static_cast<std::size_t>(state.range(1));
  const auto precision = static_cast<Precision>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  const HeadSet& s = head_set(heads);
  const MultiHeadProjection mh(s.centroids, s.answers, 0.1f, {precision, threads});
  Matrix q(batch, kDim);
  std::copy(s.queries.data.begin(), s.queries.data.begin() + static_cast<std::ptrdiff_t>(batch * kDim),
            q.data.begin());
  for (auto _ : state) benchmark::DoNotOptimize(mh.project(q).data.data());

  const auto& limits = g_limits.at(threads);
  const double flops = 4.0 * double(heads) * kDim * double(batch);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
  state.counters["us_per_query"] =
      benchmark::Counter(double(batch) * 1e-6, benchmark::Counter::kIsIterationInvariantRate |
                                                  benchmark::Counter::kInvert);
  state.counters["GFLOPs"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  // Fractions of the limits, filled in by the reporter below from the rates.
  state.counters["bytes"] = static_cast<double>(mh.storage_bytes());
  state.counters["peak_gflops"] = limits.sgemm_gflops;
  state.counters["triad_gbs"] = limits.triad_gbs;
  state.counters["read_gbs"] = limits.read_gbs;
  if (precision != Precision::F32 && batch == 1 && threads == g_limits.rbegin()->first) accuracy_vs_fp32(s, mh, state);
}

std::vector<long> parse_heads(int& argc, char** argv) {
  std::vector<long> heads{1000, 10000, 100000, 1000000};
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--heads=", 8) == 0) {
      heads.clear();
      std::string list = argv[i] + 8;
      for (std::size_t pos = 0; pos <= list.size();) {
        const std::size_t comma = std::min(list.find(',', pos), list.size());
        heads.push_back(std::stol(list.substr(pos, comma - pos)));
        pos = comma + 1;
      }
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      --i;
    }
  }
  return heads;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<long> heads = parse_heads(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const int all = ldaproj::detail::available_cores();
  for (int t : std::set<int>{1, all}) {
    g_limits[t] = ldaproj::bench::measure_limits(t);
    ldaproj::bench::report_limits(g_limits[t]);
  }
  for (long n : heads)
    for (long batch : {1L, 256L})
      for (long precision : {0L, 1L, 2L})
        for (int t : std::set<int>{1, all}) {
          const std::string name = "BM_Teacher/heads:" + std::to_string(n) + "/batch:" + std::to_string(batch) +
                                   "/" + std::string(ldaproj::to_string(static_cast<Precision>(precision))) +
                                   "/threads:" + std::to_string(t);
          benchmark::RegisterBenchmark(name.c_str(), BM_Teacher)
              ->Args({n, batch, precision, t})
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime();
        }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
