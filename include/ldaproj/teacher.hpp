// The multi-head projection (the teacher) and the two baselines it is
// compared with: direct query->answer cosine and a single global matrix W.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ldaproj/index.hpp"
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

// How the teacher stores centroids and answers for its kernels. Reduced
// precision halves (bf16) or quarters (int8, one scale per row) the bytes a
// query streams, at a small accuracy cost (docs/BENCHMARKS.md).
enum class Precision { F32, BF16, I8 };
std::string_view to_string(Precision precision);  // "fp32", "bf16", "int8"
Precision parse_precision(std::string_view name);  // InputError on unknown

struct TeacherOptions {
  Precision precision = Precision::F32;
  int threads = 0;  // cap on threads per call; 0 = every core this process may use
};

// One head per cluster: keys are centroids, values are answer embeddings.
//   w = softmax(cos(q, centroid_i) / temperature),  p = normalise(sum_i w_i answer_i)
// One query streams the heads once (online softmax, split over threads for
// large n); a batch goes through GEMM over blocks of heads.
class MultiHeadProjection {
 public:
  MultiHeadProjection();
  // Rows of centroids and answers are normalised here; they must have equal
  // shapes. InputError on mismatched shapes, zero or non-finite rows.
  MultiHeadProjection(Matrix centroids, Matrix answers, float temperature = kDefaultTemperature,
                      TeacherOptions options = {});

  std::size_t num_heads() const;
  std::size_t dim() const;
  float temperature() const { return temperature_; }
  const TeacherOptions& options() const { return options_; }
  // Unit centroids / answers as stored (dequantised under reduced precision).
  Matrix centroids() const;
  Matrix answers() const;
  // Bytes of head storage one query reads.
  std::size_t storage_bytes() const;
  // One head's unit centroid / answer as fp32 into out[0, dim).
  void centroid_row(std::size_t head, float* out) const;
  void answer_row(std::size_t head, float* out) const;

  // Cosine similarity of every query to every centroid (queries x heads).
  // Queries are normalised internally (InputError on zero queries).
  Matrix route_scores(const Matrix& queries) const;
  // Routing weights (queries x heads); each row sums to one.
  Matrix routing_weights(const Matrix& queries, float temperature) const;
  // Projected, unit-length embeddings (queries x dim). When weights_out is
  // given it receives the routing weights (otherwise no queries x heads
  // matrix is ever built).
  Matrix project(const Matrix& queries, float temperature, Matrix* weights_out = nullptr) const;
  Matrix project(const Matrix& queries) const { return project(queries, temperature_); }

  MultiHeadProjection(const MultiHeadProjection&);
  MultiHeadProjection& operator=(const MultiHeadProjection&);
  MultiHeadProjection(MultiHeadProjection&&) noexcept;
  MultiHeadProjection& operator=(MultiHeadProjection&&) noexcept;
  ~MultiHeadProjection();

 private:
  struct Storage;
  std::shared_ptr<const Storage> storage_;  // immutable, shared by copies
  float temperature_ = kDefaultTemperature;
  TeacherOptions options_;
};

// How one query was routed by the sparse teacher.
struct SparseRouting {
  std::vector<std::size_t> heads;  // the heads used, heaviest first
  std::vector<float> weights;      // softmax over those heads only
  std::vector<float> similarity;   // cosine to each head's centroid
  // Upper bound on the softmax mass of the heads left out, if the index found
  // the true top heads: with s_1 >= ... >= s_k the scores found,
  //   X = (n - k) exp((s_k - s_1)/t),  bound = X / (sum_i exp((s_i - s_1)/t) + X).
  float uncovered_mass_bound = 0.0f;
};

// The teacher restricted to the route_k heads whose centroids are nearest the
// query, found by an HNSW index over the centroids: exact scores and softmax
// over those heads, then their weighted answers. O(route_k * d) per query
// after the graph search, instead of O(n * d).
class SparseMultiHeadProjection {
 public:
  explicit SparseMultiHeadProjection(MultiHeadProjection dense, HnswOptions index_options = {});

  // Projected unit embeddings (queries x dim); `routing` (optional) gets one
  // entry per query. route_k is capped at the number of heads.
  Matrix project(const Matrix& queries, float temperature, std::size_t route_k,
                 std::vector<SparseRouting>* routing = nullptr) const;

  const MultiHeadProjection& dense() const { return dense_; }
  const HnswIndex& index() const { return *index_; }
  // Memory of the centroid index (the head storage is shared with dense()).
  std::size_t index_bytes() const { return index_->memory_bytes(); }

 private:
  MultiHeadProjection dense_;
  std::shared_ptr<const HnswIndex> index_;
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
