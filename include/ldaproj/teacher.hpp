// The multi-head projection (the teacher) and the two baselines it is
// compared with: direct query->answer cosine and a single global matrix W.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ldaproj/matrix.hpp"

namespace ldaproj {

inline constexpr float kDefaultTemperature = 0.1f;

// How a head's centroid is made from its question embeddings.
//  Mean:       normalised mean of the (unit) question embeddings.
//  Reweighted: the original project's iteration: start uniform, then `rounds`
//              times weight questions by softmax(q.c) and renormalise c.
enum class CentroidMethod { Mean, Reweighted };
std::string_view to_string(CentroidMethod method);
CentroidMethod parse_centroid_method(std::string_view name);  // InputError on unknown

// Centroid of the rows of `questions` (rows need not be unit length; each is
// normalised first). Throws InputError on an empty set or all-zero rows.
std::vector<float> compute_centroid(const Matrix& questions, CentroidMethod method,
                                    int rounds = 3);

// Scales every row to unit L2 norm in place. Throws InputError naming the row
// (with `what` as the kind of row, e.g. "query") when a row is zero or not finite.
void normalize_rows(Matrix& m, std::string_view what);

// Numerically stable softmax of scores/temperature, in place over `n` values.
void softmax_inplace(float* scores, std::size_t n, float temperature);

// One head per cluster: keys are centroids, values are answer embeddings.
//   w = softmax(cos(q, centroid_i) / temperature),  p = normalise(sum_i w_i answer_i)
class MultiHeadProjection {
 public:
  MultiHeadProjection() = default;
  // Rows of centroids and answers are normalised here; they must have equal
  // shapes. InputError on mismatched shapes, zero or non-finite rows.
  MultiHeadProjection(Matrix centroids, Matrix answers, float temperature = kDefaultTemperature);

  std::size_t num_heads() const { return centroids_.rows; }
  std::size_t dim() const { return centroids_.cols; }
  float temperature() const { return temperature_; }
  const Matrix& centroids() const { return centroids_; }
  const Matrix& answers() const { return answers_; }

  // Cosine similarity of every query to every centroid (queries x heads).
  // Queries are normalised internally (InputError on zero queries).
  Matrix route_scores(const Matrix& queries) const;
  // Routing weights (queries x heads); each row sums to one.
  Matrix routing_weights(const Matrix& queries, float temperature) const;
  // Projected, unit-length embeddings (queries x dim). When weights_out is
  // given it receives the routing weights.
  Matrix project(const Matrix& queries, float temperature, Matrix* weights_out = nullptr) const;
  Matrix project(const Matrix& queries) const { return project(queries, temperature_); }

 private:
  Matrix centroids_;
  Matrix answers_;
  float temperature_ = kDefaultTemperature;
};

// Baseline: one linear map for all clusters,
//   W = A Q^T pinv(Q Q^T + lambda D D^T + mu I)
// with Q the centroids and D the question residuals from their centroid (as
// columns), A the answer embeddings. project(q) = normalise(W q).
class GlobalProjection {
 public:
  GlobalProjection() = default;
  // centroids/answers: heads x dim; residuals: any number of rows x dim.
  static GlobalProjection fit(const Matrix& centroids, const Matrix& answers,
                              const Matrix& residuals, double lambda = 1.0, double mu = 1e-6);
  Matrix project(const Matrix& queries) const;
  const Matrix& weights() const { return w_; }  // dim x dim, row-major

 private:
  Matrix w_;
};

}  // namespace ldaproj
