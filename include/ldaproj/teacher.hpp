// The multi-head projection (the teacher) and the two baselines it is
// compared with: direct query->answer cosine and a single global matrix W.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ldaproj/index.hpp"
#include "ldaproj/matrix.hpp"
#include "ldaproj/precision.hpp"

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

// Discriminative keys: starting from the unit rows of `keys` (e.g. the
// centroids), `epochs` of full-batch Adam on the cross-entropy of
//   softmax_i(cos(question, key_i) / temperature)
// against each question's head, keys kept unit length. The teacher then
// routes with keys that separate neighbouring clusters instead of their
// means. Deterministic for a thread count; InputError on mismatched shapes or heads.
//
// Memory is bounded whatever the size (key_learning_memory): with at most
// `exact_up_to` keys every question's softmax runs over every key, questions
// streamed in blocks (the same loss and gradient as one scores matrix);
// beyond, over its own head's keys and the `candidates` keys nearest to it
// (pooled per head), found by an exact blocked search and searched again every
// `refresh_every` epochs as the keys move. Keys outside a question's
// candidates then get no gradient from it, and the reported loss is the
// cross-entropy over the candidates (a lower bound of the full one).
struct KeyLearningProgress {
  std::size_t epoch = 0, epochs = 0;
  double loss = 0, accuracy = 0;  // this epoch's forward pass (before its update)
  double seconds = 0;             // since learning started
  bool refreshed = false;         // the candidates were searched again before this epoch
};
struct KeyLearningOptions {
  std::size_t epochs = 100;
  float lr = 0.002f;
  // The query adapter (the general form below, when given one): Adam rate
  // and weight decay of W.
  float adapter_lr = 0.0002f;
  float adapter_decay = 0.0f;
  std::size_t exact_up_to = 1024;
  std::size_t candidates = 32;      // competitors per question beyond exact_up_to (0: always exact)
  std::size_t refresh_every = 25;   // epochs between candidate searches (0: only before the first)
  // The search scans every key up to this many keys; beyond, it goes through
  // coarse k-means lists of the keys, scoring each question against the keys
  // of its `probe` nearest lists (approximate: a competitor in another list is missed).
  std::size_t exact_search_up_to = 20000;
  std::size_t probe = 32;
  int threads = 0;                  // 0: every core this process may use
  // After every epoch, e.g. for a progress line.
  std::function<void(const KeyLearningProgress&)> on_epoch = {};
  // Called after each epoch listed in `checkpoints` with the unit keys (and
  // the adapter, or null); returning false stops the learning there.
  std::vector<std::size_t> checkpoints = {};
  std::function<bool(std::size_t epoch, const Matrix& keys, const Matrix* adapter)> on_checkpoint = {};
};
struct KeyLearningReport {
  std::size_t epochs = 0;                           // epochs run
  double initial_loss = 0, final_loss = 0;          // mean cross-entropy on the questions
  double initial_accuracy = 0, final_accuracy = 0;  // share routed to their own head
  bool exact = true;                                // softmax over every key (else over candidates)
  std::size_t candidates = 0;                       // competitors per question (every key when exact)
  std::size_t refreshes = 0;                        // candidate searches
  bool stopped_early = false;                       // a checkpoint ended it before `epochs`
  // Candidate mode: the mean share of each question's full softmax mass
  // (over every key) that its candidates hold at the final keys, measured on
  // up to 1,024 questions; 1 when exact.
  double candidate_mass = 1.0;
  double seconds = 0;
};
KeyLearningReport learn_keys(Matrix& keys, const Matrix& questions, const std::vector<std::size_t>& head_of_question,
                             float temperature, const KeyLearningOptions& options = {});
// Whether learn_keys runs exactly for this many keys, and about how many
// bytes it allocates (to refuse a run that cannot fit before it starts).
bool key_learning_is_exact(std::size_t keys, const KeyLearningOptions& options);
std::size_t key_learning_memory(std::size_t keys, std::size_t questions, std::size_t dim, bool adapter,
                                const KeyLearningOptions& options);
// The general form: several keys per head (head_of_key[i] is key i's head;
// a head's routing mass is the sum over its keys, i.e. its score is the
// log-sum-exp of its keys' scores) and, when `adapter` is not null, a query
// adapter W (d x d, started at zero when it has another shape) learned with
// the keys: questions are routed as normalise(q + W q) (adapt_queries).
KeyLearningReport learn_keys(Matrix& keys, const std::vector<std::size_t>& head_of_key, Matrix* adapter,
                             const Matrix& questions, const std::vector<std::size_t>& head_of_question,
                             float temperature, const KeyLearningOptions& options = {});

// Up to k sub-keys for one head: spherical k-means over its questions from a
// deterministic farthest-point start (fewer keys when it has fewer questions).
Matrix kmeans_sub_keys(const Matrix& questions, std::size_t k, int iterations = 20);

// The queries as the teacher of a projection with a query adapter sees them:
// normalise(q + W q) for unit q (W: d x d, row-major). An empty adapter
// (0 x 0) only normalises. InputError on mismatched shapes or zero queries.
Matrix adapt_queries(const Matrix& adapter, const Matrix& queries);

// Scales every row to unit L2 norm in place. Throws InputError naming the row
// (with `what` as the kind of row, e.g. "query") when a row is zero or not finite.
void normalize_rows(Matrix& m, std::string_view what);

// Whether every row has unit L2 norm (within `tolerance`) and is finite.
bool has_unit_rows(const Matrix& m, double tolerance = 1e-5);

// Numerically stable softmax of scores/temperature, in place over `n` values.
void softmax_inplace(float* scores, std::size_t n, float temperature);

// How the teacher stores centroids and answers for its kernels
// (ldaproj/precision.hpp): reduced precision halves (bf16) or quarters (int8,
// one scale per row) the bytes a query streams, at a small accuracy cost.

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
