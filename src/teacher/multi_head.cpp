// The teacher: routing of queries over head centroids and projection onto
// the heads' answer embeddings, batch-first through GEMM.
#include <algorithm>
#include <cmath>
#include <string>

#include "common/gemm.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

void normalize_rows(Matrix& m, std::string_view what) {
  for (std::size_t i = 0; i < m.rows; ++i) {
    float* r = m.row(i);
    double sq = 0.0;
    for (std::size_t j = 0; j < m.cols; ++j) sq += static_cast<double>(r[j]) * r[j];
    if (!std::isfinite(sq)) {
      throw InputError(std::string(what) + " #" + std::to_string(i) +
                       " contains NaN or Inf values");
    }
    if (sq <= 0.0) {
      throw InputError(std::string(what) + " #" + std::to_string(i) +
                       " is a zero vector; it has no direction to compare by cosine");
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(sq));
    for (std::size_t j = 0; j < m.cols; ++j) r[j] *= inv;
  }
}

void softmax_inplace(float* scores, std::size_t n, float temperature) {
  if (n == 0) return;
  if (!(temperature > 0.0f) || !std::isfinite(temperature)) {
    throw InputError("temperature must be a positive finite number, got " +
                     std::to_string(temperature));
  }
  // Subtracting the max keeps exp() in range for any temperature; the sum is
  // then >= 1, so the division is always safe.
  const float inv_t = 1.0f / temperature;
  float max_score = scores[0];
  for (std::size_t i = 1; i < n; ++i) max_score = std::max(max_score, scores[i]);
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    scores[i] = std::exp((scores[i] - max_score) * inv_t);
    sum += scores[i];
  }
  const float inv_sum = static_cast<float>(1.0 / sum);
  for (std::size_t i = 0; i < n; ++i) scores[i] *= inv_sum;
}

MultiHeadProjection::MultiHeadProjection(Matrix centroids, Matrix answers, float temperature)
    : centroids_(std::move(centroids)), answers_(std::move(answers)), temperature_(temperature) {
  if (centroids_.rows != answers_.rows || centroids_.cols != answers_.cols) {
    throw InputError("multi-head projection: centroids are " + std::to_string(centroids_.rows) +
                     "x" + std::to_string(centroids_.cols) + " but answers are " +
                     std::to_string(answers_.rows) + "x" + std::to_string(answers_.cols));
  }
  if (centroids_.rows == 0) throw InputError("multi-head projection needs at least one head");
  if (!(temperature > 0.0f) || !std::isfinite(temperature)) {
    throw InputError("temperature must be a positive finite number, got " +
                     std::to_string(temperature));
  }
  normalize_rows(centroids_, "centroid");
  normalize_rows(answers_, "answer embedding");
}

Matrix MultiHeadProjection::route_scores(const Matrix& queries) const {
  if (queries.cols != dim()) {
    throw InputError("query embeddings have dimension " + std::to_string(queries.cols) +
                     ", the projection expects " + std::to_string(dim()));
  }
  Matrix q = queries;
  normalize_rows(q, "query");
  Matrix scores;
  detail::gemm_abt(q, centroids_, scores);
  return scores;
}

Matrix MultiHeadProjection::routing_weights(const Matrix& queries, float temperature) const {
  Matrix w = route_scores(queries);
  for (std::size_t i = 0; i < w.rows; ++i) softmax_inplace(w.row(i), w.cols, temperature);
  return w;
}

Matrix MultiHeadProjection::project(const Matrix& queries, float temperature,
                                    Matrix* weights_out) const {
  Matrix w = routing_weights(queries, temperature);
  Matrix p;
  detail::gemm_ab(w, answers_, p);
  // A convex mix of unit vectors is zero only if answers cancel exactly;
  // normalize_rows reports that case instead of returning NaN.
  normalize_rows(p, "projected query");
  if (weights_out) *weights_out = std::move(w);
  return p;
}

}  // namespace ldaproj
