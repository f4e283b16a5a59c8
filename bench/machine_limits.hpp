// This machine's limits, measured in the benchmark's own process so every
// figure can be read as a fraction of them: sgemm peak with the BLAS we link,
// and memory bandwidth (STREAM-style triad, and a read-only stream since the
// teacher only reads).
#pragma once
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/parallel.hpp"

namespace ldaproj::bench {

struct MachineLimits {
  int threads = 1;
  double sgemm_gflops = 0;  // 2048^3 sgemm, best of several
  double triad_gbs = 0;     // a = b + s*c, 12 bytes per element (STREAM's count)
  double read_gbs = 0;      // sum of an array, 4 bytes per element
};

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

inline double measure_sgemm_gflops(int threads) {
  detail::use_blas_threads(threads);
  const int n = 2048;
  std::vector<float> a(std::size_t(n) * n, 1.0f), b(std::size_t(n) * n, 0.5f), c(std::size_t(n) * n);
  double best = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                c.data(), n);
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * n * double(n) * n / best * 1e-9;
}

// Arrays of 64 Mi floats (256 MiB each), far beyond any cache.
inline void measure_bandwidth(int threads, double& triad_gbs, double& read_gbs) {
  const std::size_t n = std::size_t(64) << 20;
  std::vector<float> a(n), b(n, 1.0f), c(n, 2.0f);
  const std::size_t chunks = std::size_t(threads) * 8, per = n / chunks;
  double best_triad = 1e30, best_read = 1e30;
  std::vector<double> partial(chunks);
  for (int rep = 0; rep < 5; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    detail::parallel_for(chunks, threads, [&](std::size_t k) {
      for (std::size_t i = k * per; i < (k + 1) * per; ++i) a[i] = b[i] + 3.0f * c[i];
    });
    best_triad = std::min(best_triad, seconds_since(t0));
    t0 = std::chrono::steady_clock::now();
    detail::parallel_for(chunks, threads, [&](std::size_t k) {
      // Integer adds of the float bits: associative, so the compiler
      // vectorises the loop and it runs at load speed, not add latency.
      const auto* bits = reinterpret_cast<const std::uint32_t*>(a.data());
      std::uint32_t sum = 0;
      for (std::size_t i = k * per; i < (k + 1) * per; ++i) sum += bits[i];
      partial[k] = sum;
    });
    best_read = std::min(best_read, seconds_since(t0));
    benchmark::DoNotOptimize(partial.data());
  }
  triad_gbs = 12.0 * double(chunks * per) / best_triad * 1e-9;
  read_gbs = 4.0 * double(chunks * per) / best_read * 1e-9;
}

inline MachineLimits measure_limits(int threads) {
  MachineLimits m;
  m.threads = threads;
  m.sgemm_gflops = measure_sgemm_gflops(threads);
  measure_bandwidth(threads, m.triad_gbs, m.read_gbs);
  return m;
}

// Adds the limits to the report's header (console and JSON "context").
inline void report_limits(const MachineLimits& m) {
  const std::string t = std::to_string(m.threads);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", m.sgemm_gflops);
  benchmark::AddCustomContext("sgemm_gflops_threads_" + t, buf);
  std::snprintf(buf, sizeof buf, "%.1f", m.triad_gbs);
  benchmark::AddCustomContext("triad_gbs_threads_" + t, buf);
  std::snprintf(buf, sizeof buf, "%.1f", m.read_gbs);
  benchmark::AddCustomContext("read_gbs_threads_" + t, buf);
}

}  // namespace ldaproj::bench
