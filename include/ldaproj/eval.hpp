// Retrieval evaluation: held-out test files, Recall@k / MRR@10, and how
// closely a student agrees with its teacher.
#pragma once
#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "ldaproj/search.hpp"

namespace ldaproj {

struct LabeledQuery {
  std::string text;
  std::string cluster;  // expected cluster's external id
};

// Reads the original project's held-out format
//   {"clusters":[{"id":..., "queries":{"novel":[...]}}]}
// or JSON Lines {"query":..., "cluster":...}. InputError names file, record, field.
std::vector<LabeledQuery> read_test_queries(const std::filesystem::path& file);

struct RetrievalMetrics {
  std::size_t queries = 0;
  double recall_at_1 = 0, recall_at_5 = 0, mrr_at_10 = 0;
};

// A query is a hit at rank k when an answer of its expected cluster is among
// the first k results. results[i] must hold at least 10 answers for exact MRR@10.
RetrievalMetrics score_results(const std::vector<QueryResult>& results,
                               const std::vector<std::string>& expected_clusters);

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
