// The crossover study: every routing method side by side on synthetic sets
// of growing size, in one process, measured against the dense teacher.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ldaproj/distill.hpp"
#include "ldaproj/matrix.hpp"
#include "ldaproj/synthetic.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

// The heads of one synthetic set: unit centroids (mean of each cluster's
// questions) and answers, plus held-out queries, and the training questions
// of evenly spaced clusters (at most `training_questions` of them) for the
// methods that learn from the teacher.
struct HeadSet {
  Matrix centroids;
  Matrix answers;
  Matrix queries;
  std::vector<std::size_t> query_cluster;   // the cluster each held-out query was drawn for
  std::vector<std::size_t> cluster_domain;  // per head
  Matrix questions;                         // unit rows
  std::vector<std::size_t> question_head;   // per question
};

HeadSet make_head_set(std::size_t clusters, std::size_t questions_per_cluster, std::size_t queries,
                      std::uint64_t seed, std::size_t training_questions = 0);

// A routing method built over a head set: queries in, projected unit
// embeddings out.
class ScaleMethod {
 public:
  virtual ~ScaleMethod() = default;
  virtual Matrix project(const Matrix& queries) const = 0;
  virtual std::size_t memory_bytes() const = 0;
};

// `dense` is the dense teacher over the same heads; copies of it share its
// storage, so methods built on it cost no extra memory for the heads. By
// then heads.centroids has been released (dense.centroids() has them).
struct ScaleMethodFactory {
  std::string name;
  std::function<std::unique_ptr<ScaleMethod>(const HeadSet& heads, const MultiHeadProjection& dense)> build;
};

struct CrossoverOptions {
  std::vector<std::size_t> clusters{1000, 10000, 100000};
  std::vector<std::string> methods;  // empty: every registered one
  std::size_t route_k = 64;          // sparse teacher
  std::size_t queries = 256;         // held-out queries (also the throughput batch)
  std::size_t questions_per_cluster = 4;
  float temperature = 0.1f;
  int threads = 0;
  std::uint64_t seed = 1;
  double latency_budget_seconds = 2.0;  // per method and n, for the batch-1 timings
  // The learned methods: "student" (one student), "ensemble" (`domains`
  // k-means domains, a student each, top `top_domains` per query) and
  // "student-matched" (one student with as many parameters as the ensemble,
  // the extra ones as learned keys).
  std::size_t training_questions = 20000;  // distillation questions kept per n
  DistillOptions student;
  std::size_t domains = 8;
  std::size_t top_domains = 2;
  std::size_t ensemble_fine_tune_epochs = 0;  // EnsembleOptions::fine_tune_epochs
  std::function<void(const std::string&)> progress;  // status lines, may be empty
};

struct CrossoverResult {
  std::size_t clusters = 0;
  std::string method;
  double build_seconds = 0;
  double p50_us = 0, p99_us = 0;  // batch-1 latency
  double qps_batch = 0;           // queries per second at batch = options.queries
  double top10_overlap = 0;       // answers ranked by the method vs by the dense teacher
  double mean_cosine = 0;         // projected embedding vs the dense teacher's
  double recall_at_1 = 0;         // the query's own cluster's answer ranked first (ground truth)
  std::size_t memory_bytes = 0;
};

// The methods the library can build: dense-teacher, sparse-teacher,
// student, ensemble, student-matched.
std::vector<ScaleMethodFactory> scale_methods(const CrossoverOptions& options);

std::vector<CrossoverResult> run_crossover(const CrossoverOptions& options,
                                           const std::function<void(const CrossoverResult&)>& on_result = {});

// Per n: the fastest method (p50) whose top-10 overlap is at least
// `min_overlap`; the dense teacher when none is.
std::vector<std::pair<std::size_t, std::string>> recommend(const std::vector<CrossoverResult>& results,
                                                          double min_overlap = 0.95);

// Latency (p50, log scale) against n (log scale), one line per method.
std::string crossover_svg(const std::vector<CrossoverResult>& results);

}  // namespace ldaproj
