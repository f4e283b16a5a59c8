// The teacher's inner loops: routing scores, softmax and the weighted sum of
// answers for one query, streamed over blocks of heads with an online softmax
// (one pass over memory), in a scalar and an AVX-512 version.
#pragma once
#include <cstddef>
#include <limits>
#include <vector>

#include "teacher/head_storage.hpp"

namespace ldaproj::detail {

enum class Isa { Scalar, Avx512 };
// The fastest version this CPU runs (AVX-512 needs F, BW and DQ and a head
// dimension that is a multiple of 16; otherwise Scalar).
Isa best_isa(std::size_t dim);

// Softmax over heads seen so far, kept relative to the largest score:
//   sum = sum_i exp((s_i - max) / t),   acc = sum_i exp((s_i - max) / t) * a_i
struct OnlineSoftmax {
  float max = -std::numeric_limits<float>::infinity();
  double sum = 0.0;
  std::vector<float> acc;

  explicit OnlineSoftmax(std::size_t dim = 0) : acc(dim, 0.0f) {}
  void reset();
  // Folds in a state built over other heads with the same inverse temperature.
  void merge(const OnlineSoftmax& other, float inv_t);
};

// Heads [begin, end) for one unit-length query q. When `scores` is not null,
// scores[h] receives the cosine of q to centroid h.
void stream_heads(Isa isa, const HeadRows& centroids, const HeadRows& answers, const float* q,
                  float inv_t, std::size_t begin, std::size_t end, float* scores, OnlineSoftmax& state);

// Inner product of two rows (key learning's gathered candidates); the AVX-512
// version keeps four independent sums so it is not bound by FMA latency.
float dot(Isa isa, const float* a, const float* b, std::size_t n);

// x[i] = exp((x[i] - shift) * inv_t) for i < n; returns the sum.
double exp_shifted(Isa isa, float* x, std::size_t n, float shift, float inv_t);

}  // namespace ldaproj::detail
