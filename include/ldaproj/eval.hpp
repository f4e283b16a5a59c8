// Retrieval evaluation: held-out test files, Recall@k / MRR@10 / nDCG@10,
// out-of-scope rejection (in-scope accuracy, out-of-scope recall) and how
// closely a student agrees with its teacher.
#pragma once
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "ldaproj/search.hpp"

namespace ldaproj {

struct LabeledQuery {
  std::string text;
  std::string cluster;  // expected cluster's external id; empty: out of scope
  bool out_of_scope() const { return cluster.empty(); }
};

// Reads the original project's held-out format
//   {"clusters":[{"id":..., "queries":{"novel":[...]}}]}
// or JSON Lines {"query":..., "cluster":...} and, for queries no cluster
// answers, {"query":..., "out_of_scope": true}. InputError names file, record, field.
std::vector<LabeledQuery> read_test_queries(const std::filesystem::path& file);

struct RetrievalMetrics {
  std::size_t queries = 0;  // in-scope queries scored
  double recall_at_1 = 0, recall_at_5 = 0, mrr_at_10 = 0;
  // One relevant cluster per query, so the ideal DCG is 1 and
  // nDCG@10 = 1 / log2(rank + 1) for a hit at rank <= 10, else 0.
  double ndcg_at_10 = 0;
};

// A query is a hit at rank k when an answer of its expected cluster is among
// the first k results. results[i] must hold at least 10 answers for exact
// MRR@10 and nDCG@10. Out-of-scope queries (empty expected cluster) are skipped.
RetrievalMetrics score_results(const std::vector<QueryResult>& results,
                               const std::vector<std::string>& expected_clusters);

// Out-of-scope rejection as the CLINC150 paper reports it: a query is
// rejected when its QueryResult::confidence is below `threshold` (or when the
// search already rejected it). In-scope accuracy counts an in-scope query
// correct when it is not rejected and its top answer is of the expected
// cluster; out-of-scope recall is the share of out-of-scope queries rejected.
struct RejectionMetrics {
  float threshold = 0;
  std::size_t in_scope = 0, out_of_scope = 0;
  double in_scope_accuracy = 0;
  double out_of_scope_recall = 0;
  double in_scope_rejected = 0;  // share of in-scope queries wrongly rejected
};
RejectionMetrics score_rejection(const std::vector<QueryResult>& results,
                                 const std::vector<std::string>& expected_clusters, float threshold);

// The threshold that maximises in-scope accuracy + out-of-scope recall over
// these results (every distinct confidence is a candidate; ties go to the
// lowest). Meant for a validation split with both kinds of queries;
// InputError when either kind is missing.
RejectionMetrics choose_rejection_threshold(const std::vector<QueryResult>& results,
                                            const std::vector<std::string>& expected_clusters);

// Cache of query embeddings for repeated evaluations: the matrix stored for
// exactly these texts (same order) and model, else nullopt (missing, stale
// or unreadable file: re-encode and write it again).
std::optional<Matrix> read_query_embedding_cache(const std::filesystem::path& file, const std::string& model_name,
                                                 const std::vector<std::string>& texts);
void write_query_embedding_cache(const std::filesystem::path& file, const std::string& model_name,
                                 const std::vector<std::string>& texts, const Matrix& embeddings);

// Agreement of a student with its teacher on the same queries.
struct Agreement {
  std::size_t queries = 0;
  double top10_overlap = 0;  // mean |student top-10 answers ∩ teacher top-10| / 10
  double mean_cosine = 0;    // cosine between the two projected embeddings
  double min_cosine = 0;
};

// student/teacher: projected embeddings (queries x dim), and the ranked
// results of each (at least 10 answers each for an exact overlap; fewer
// available answers count over what is there).
Agreement agreement(const Matrix& student, const Matrix& teacher, const std::vector<QueryResult>& student_results,
                    const std::vector<QueryResult>& teacher_results);

}  // namespace ldaproj
