// Head centroids from question embeddings: plain mean or the original
// project's iteratively re-weighted centroid.
#include <cmath>
#include <stdexcept>
#include <string>

#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

std::string_view to_string(CentroidMethod method) {
  return method == CentroidMethod::Mean ? "mean" : "reweighted";
}

CentroidMethod parse_centroid_method(std::string_view name) {
  if (name == "mean") return CentroidMethod::Mean;
  if (name == "reweighted") return CentroidMethod::Reweighted;
  throw InputError("unknown centroid method \"" + std::string(name) +
                   "\"; expected \"mean\" or \"reweighted\"");
}

namespace {

std::vector<float> weighted_unit_sum(const Matrix& q, const std::vector<double>& weights) {
  std::vector<double> acc(q.cols, 0.0);
  for (std::size_t i = 0; i < q.rows; ++i) {
    const float* r = q.row(i);
    for (std::size_t j = 0; j < q.cols; ++j) acc[j] += weights[i] * r[j];
  }
  double sq = 0.0;
  for (double v : acc) sq += v * v;
  if (!(sq > 0.0)) throw InputError("question embeddings cancel out: centroid is a zero vector");
  const double inv = 1.0 / std::sqrt(sq);
  std::vector<float> c(q.cols);
  for (std::size_t j = 0; j < q.cols; ++j) c[j] = static_cast<float>(acc[j] * inv);
  return c;
}

}  // namespace

std::vector<float> compute_centroid(const Matrix& questions, CentroidMethod method, int rounds) {
  if (questions.rows == 0) throw InputError("cannot compute a centroid of zero questions");
  Matrix q = questions;
  normalize_rows(q, "question embedding");
  std::vector<double> weights(q.rows, 1.0 / static_cast<double>(q.rows));
  std::vector<float> c = weighted_unit_sum(q, weights);
  if (method == CentroidMethod::Mean) return c;
  // Questions closer to the current centroid get more weight (softmax at
  // temperature 1 over cosines, as in the original project).
  for (int round = 0; round < rounds; ++round) {
    std::vector<float> sims(q.rows);
    for (std::size_t i = 0; i < q.rows; ++i) {
      double dot = 0.0;
      for (std::size_t j = 0; j < q.cols; ++j) dot += static_cast<double>(q(i, j)) * c[j];
      sims[i] = static_cast<float>(dot);
    }
    softmax_inplace(sims.data(), sims.size(), 1.0f);
    for (std::size_t i = 0; i < q.rows; ++i) weights[i] = sims[i];
    c = weighted_unit_sum(q, weights);
  }
  return c;
}

}  // namespace ldaproj
