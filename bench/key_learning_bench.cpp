// Training at scale, each against its baseline in the same run:
//  - blocked top-k (detail::top_k_inner_product) against a full queries x base
//    score matrix and a partial sort per row;
//  - the coarse-list join (detail::probe_top_k) against the exact blocked top-k;
//  - one epoch of learn_keys in candidate mode against the exact (streamed)
//    mode and against the full-batch reference (tests/key_learning_reference.hpp).
// Synthetic clustered unit vectors (ldaproj synth's generator), d = 384.
// Run: build/key_learning_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "../tests/key_learning_reference.hpp"
#include "common/gemm.hpp"
#include "index/coarse_lists.hpp"
#include "index/top_k.hpp"
#include "ldaproj/synthetic.hpp"
#include "ldaproj/teacher.hpp"

namespace {

using ldaproj::Matrix;

struct Data {
  Matrix questions{0, 384}, keys{0, 384};
  std::vector<std::size_t> head_of_question;
};

const Data& data(std::size_t clusters) {
  static std::map<std::size_t, Data> cache;
  auto it = cache.find(clusters);
  if (it != cache.end()) return it->second;
  ldaproj::SyntheticSpec spec;
  spec.clusters = clusters;
  spec.questions_per_cluster = 3;
  Data d;
  ldaproj::generate_synthetic(spec, [&](const ldaproj::SyntheticCluster& c) {
    d.questions.data.insert(d.questions.data.end(), c.questions.data.begin(), c.questions.data.end());
    d.questions.rows += c.questions.rows;
    std::vector<float> mean(384, 0.0f);
    for (std::size_t r = 0; r < c.questions.rows; ++r) {
      d.head_of_question.push_back(c.index);
      for (std::size_t j = 0; j < 384; ++j) mean[j] += c.questions(r, j);
    }
    d.keys.data.insert(d.keys.data.end(), mean.begin(), mean.end());
    ++d.keys.rows;
  });
  ldaproj::normalize_rows(d.keys, "centroid");
  return cache.emplace(clusters, std::move(d)).first->second;
}

Matrix first_rows(const Matrix& m, std::size_t rows) {
  Matrix out(rows, m.cols);
  std::copy(m.data.begin(), m.data.begin() + static_cast<std::ptrdiff_t>(rows * m.cols), out.data.begin());
  return out;
}

constexpr std::size_t kQueries = 2048, kTopK = 33;

void BM_TopKBlocked(benchmark::State& state) {
  const Data& d = data(static_cast<std::size_t>(state.range(0)));
  const Matrix q = first_rows(d.questions, kQueries);
  for (auto _ : state) {
    auto r = ldaproj::detail::top_k_inner_product(q.data.data(), q.rows, d.keys.data.data(), d.keys.rows, 384, kTopK);
    benchmark::DoNotOptimize(r.index.data());
  }
  state.counters["queries/s"] = benchmark::Counter(double(kQueries), benchmark::Counter::kIsIterationInvariantRate);
}

// The baseline: every score in one matrix (queries x base floats), then a
// partial sort of each row.
void BM_TopKFullScores(benchmark::State& state) {
  const Data& d = data(static_cast<std::size_t>(state.range(0)));
  const Matrix q = first_rows(d.questions, kQueries);
  std::vector<std::uint32_t> order(d.keys.rows);
  for (auto _ : state) {
    Matrix scores;
    ldaproj::detail::gemm_abt(q, d.keys, scores);
    for (std::size_t r = 0; r < q.rows; ++r) {
      const float* s = scores.row(r);
      std::iota(order.begin(), order.end(), 0u);
      std::partial_sort(order.begin(), order.begin() + kTopK, order.end(),
                        [s](std::uint32_t a, std::uint32_t b) { return s[a] > s[b]; });
      benchmark::DoNotOptimize(order.data());
    }
  }
  state.counters["queries/s"] = benchmark::Counter(double(kQueries), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_CoarseProbe(benchmark::State& state) {
  const Data& d = data(static_cast<std::size_t>(state.range(0)));
  const Matrix q = first_rows(d.questions, kQueries);
  const std::size_t probe = 32;
  const auto lists = ldaproj::detail::build_coarse_lists(
      d.keys, ldaproj::detail::coarse_list_count(d.keys.rows, probe), 10);
  for (auto _ : state) {
    auto r = ldaproj::detail::probe_top_k(lists, d.keys, q, kTopK, probe);
    benchmark::DoNotOptimize(r.index.data());
  }
  state.counters["queries/s"] = benchmark::Counter(double(kQueries), benchmark::Counter::kIsIterationInvariantRate);
}

// One epoch (plus the candidate search it starts with): range(1) 0 = exact
// (streamed), 1 = candidates (32), 2 = the full-batch reference.
void BM_LearnKeysEpoch(benchmark::State& state) {
  const Data& d = data(static_cast<std::size_t>(state.range(0)));
  std::vector<std::size_t> head_of_key(d.keys.rows);
  std::iota(head_of_key.begin(), head_of_key.end(), 0);
  ldaproj::KeyLearningOptions o;
  o.epochs = 1;
  o.exact_up_to = state.range(1) == 1 ? 0 : d.keys.rows;
  for (auto _ : state) {
    Matrix keys = d.keys;
    const auto r = state.range(1) == 2
                       ? ldaproj::testing_support::reference_learn_keys(keys, head_of_key, nullptr, d.questions,
                                                                        d.head_of_question, 0.02f, o)
                       : ldaproj::learn_keys(keys, head_of_key, nullptr, d.questions, d.head_of_question, 0.02f, o);
    benchmark::DoNotOptimize(r.final_loss);
  }
  state.SetLabel(state.range(1) == 0 ? "exact" : state.range(1) == 1 ? "candidates" : "full-batch reference");
}

}  // namespace

BENCHMARK(BM_TopKBlocked)->Arg(20000)->Arg(100000)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TopKFullScores)->Arg(20000)->Arg(100000)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CoarseProbe)->Arg(20000)->Arg(100000)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LearnKeysEpoch)
    ->Args({5000, 0})
    ->Args({5000, 1})
    ->Args({5000, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(3);

BENCHMARK_MAIN();
