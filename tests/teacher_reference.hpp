// Shared by the teacher tests: random inputs and the teacher's definition
// written out in double precision with no tricks, to compare kernels with.
#pragma once
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "ldaproj/matrix.hpp"

namespace ldaproj::testing_support {

inline Matrix random_matrix(std::size_t rows, std::size_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Matrix m(rows, cols);
  for (float& v : m.data) v = dist(rng);
  return m;
}

inline std::vector<double> unit(const float* v, std::size_t n) {
  double sq = 0;
  for (std::size_t i = 0; i < n; ++i) sq += double(v[i]) * v[i];
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = v[i] / std::sqrt(sq);
  return out;
}

// The definition, written out in double precision with no tricks.
inline std::vector<double> reference_projection(const Matrix& c, const Matrix& a, const float* q, double tau,
                                         std::vector<double>* weights = nullptr) {
  const auto qn = unit(q, c.cols);
  std::vector<double> s(c.rows);
  for (std::size_t i = 0; i < c.rows; ++i) {
    const auto cn = unit(c.row(i), c.cols);
    double dot = 0;
    for (std::size_t j = 0; j < c.cols; ++j) dot += qn[j] * cn[j];
    s[i] = dot / tau;
  }
  double mx = *std::max_element(s.begin(), s.end()), sum = 0;
  for (double& v : s) sum += (v = std::exp(v - mx));
  for (double& v : s) v /= sum;
  std::vector<double> p(c.cols, 0.0);
  for (std::size_t i = 0; i < c.rows; ++i) {
    const auto an = unit(a.row(i), a.cols);
    for (std::size_t j = 0; j < c.cols; ++j) p[j] += s[i] * an[j];
  }
  if (weights) *weights = s;
  double norm = 0;
  for (double v : p) norm += v * v;
  for (double& v : p) v /= std::sqrt(norm);
  return p;
}

}  // namespace ldaproj::testing_support
