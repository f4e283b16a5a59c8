// Answering queries from a trained store by any method: the multi-head
// teacher, its distilled student or ensemble, routing over the individual
// training questions, the direct cosine baseline or the global-W baseline;
// optionally rejecting queries no cluster answers (out of scope).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ldaproj/matrix.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

// QuestionRouting: the teacher's projection with keys at the individual
// training questions instead of their centroids,
//   s_j = cos(q, question_j),  w_c = sum over c's questions of softmax_j(s_j / t_q)
//   (over the question_neighbors nearest questions when that is > 0),
//   p = normalise(sum_c w_c answer_c).
enum class Method { MultiHead, Direct, GlobalW, SparseTeacher, Student, Ensemble, QuestionRouting };
// "multi-head", "direct", "global-w", "sparse-teacher", "student", "ensemble", "question-routing"
std::string_view to_string(Method method);
Method parse_method(std::string_view name);  // accepts - or _; InputError otherwise
inline constexpr Method kAllMethods[] = {Method::Direct,          Method::GlobalW, Method::MultiHead,
                                         Method::SparseTeacher,   Method::Student, Method::Ensemble,
                                         Method::QuestionRouting};

// Question routing's default temperature and neighbours, chosen on the
// CLINC150 validation split (docs/QUALITY.md).
inline constexpr float kDefaultQuestionTemperature = 0.1f;
inline constexpr std::size_t kDefaultQuestionNeighbors = 20;

struct RankedAnswer {
  std::int64_t cluster_id = 0;
  std::string cluster;  // external id
  std::int64_t answer_id = 0;
  std::string text;
  float score = 0.0f;  // cosine between the (projected) query and the answer
};

struct RoutingEntry {
  std::int64_t cluster_id = 0;
  std::string cluster;  // external id
  float weight = 0.0f;
  float similarity = 0.0f;  // cosine to the head's centroid
};

struct SearchOptions {
  Method method = Method::MultiHead;
  std::size_t top_k = 5;
  std::optional<float> temperature;  // default: the projection's own
  std::size_t routing_top = 0;       // > 0: return that many top heads (multi-head, sparse-teacher)
  std::size_t route_k = 64;          // sparse-teacher: heads routed over per query
  std::size_t top_domains = 0;       // ensemble: domains (students) run per query; 0: as trained
  bool include_projection = false;   // fill QueryResult::projection
  // question-routing: softmax temperature over question similarities, and
  // how many nearest questions share the mass (0: all of them).
  float question_temperature = kDefaultQuestionTemperature;
  std::size_t question_neighbors = kDefaultQuestionNeighbors;
  // Out-of-scope rejection: a query whose confidence is below this gets no
  // answers (QueryResult::rejected). Setting it also fills confidence.
  std::optional<float> reject_below;
  // multi-head only: blends with the other scores, each in [0, 1).
  //  blend_questions b: routing weights (1 - b) w_teacher + b w_question-routing
  //    (question_temperature, question_neighbors), then their answers as usual;
  //  blend_direct g: answers ranked by (1 - g) cos(p, a) + g cos(q, a).
  float blend_questions = 0.0f;
  float blend_direct = 0.0f;
  bool include_confidence = false;   // fill QueryResult::confidence without rejecting
};

struct QueryResult {
  std::vector<RankedAnswer> answers;  // best first, one per cluster
  std::vector<RoutingEntry> routing;  // heaviest first
  // sparse-teacher: bound on the softmax mass of the heads it left out.
  float uncovered_mass_bound = 0.0f;
  std::vector<float> projection;      // the vector answers were ranked by (include_projection)
  // How close the query is to what the store knows (reject_below /
  // include_confidence): the largest cosine to a training question for
  // question-routing, to a head's centroid for every other method.
  float confidence = 0.0f;
  bool rejected = false;              // confidence < reject_below: answers is empty
};

struct SearcherOptions {
  TeacherOptions teacher;  // storage precision and thread cap of the heads
  // Answer corpora with at least this many answers are searched through an
  // HNSW graph instead of exactly (answer_index_recall measures the cost).
  std::size_t approximate_answers_from = 100000;
  HnswOptions answer_index;
};

class Searcher {
 public:
  // Loads the named projection (or the active one) with its heads, its
  // student and ensemble when they were trained, the answer corpus and, lazily, what
  // global-W needs (so `store` must outlive the Searcher). InputError when
  // nothing is trained.
  static Searcher load(const Store& store, const std::string& projection_name = {},
                       const SearcherOptions& options = {});

  // One result per query row (embeddings from the projection's model).
  // Method::Student without a student is an InputError naming `ldaproj distill`.
  std::vector<QueryResult> search(const Matrix& query_embeddings,
                                  const SearchOptions& options) const;
  // The unit-length vectors a method ranks answers by (queries x dim).
  Matrix project(const Matrix& query_embeddings, const SearchOptions& options) const;
  // Ranks answers for already projected unit vectors.
  std::vector<QueryResult> rank(const Matrix& projected, std::size_t top_k) const;

  bool has_student() const;
  std::size_t student_parameters() const;  // 0 without a student
  bool has_ensemble() const;
  std::size_t ensemble_parameters() const;  // 0 without an ensemble
  // How the student and ensemble relate to the projection they are stored
  // with (nullopt without one): TeacherMatch::Differs only for one imported
  // with `import --force` from another teacher; Unknown for one stored
  // before fingerprints or forced without one. Callers that describe the
  // model (stats, /v1/info) must show anything but Matches.
  std::optional<Provenance> student_provenance() const;
  std::optional<Provenance> ensemble_provenance() const;
  // The projection's fingerprint id (ldaproj/fingerprint.hpp).
  const std::string& fingerprint_id() const;

  const std::string& model_name() const;
  const std::string& projection_name() const;
  float temperature() const;
  std::size_t num_heads() const;
  std::size_t num_answers() const;
  // Whether answers are searched through the HNSW graph, and if so the
  // fraction of the exact top-k answers it returns for these (projected,
  // unit) query embeddings; 1 for exact search.
  bool answer_index_is_approximate() const;
  double answer_index_recall(const Matrix& projected_queries, std::size_t k) const;

  Searcher(Searcher&&) noexcept;
  Searcher& operator=(Searcher&&) noexcept;
  ~Searcher();

 private:
  struct Impl;
  explicit Searcher(std::unique_ptr<Impl> impl);
  void check_queries(const Matrix& queries) const;
  std::size_t query_block() const;  // queries per block of search and project
  static void check_question_options(const SearchOptions& options);
  static void check_blend_options(const SearchOptions& options);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ldaproj
