// Retrieval evaluation: held-out test files and Recall@k / MRR@10.
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

}  // namespace ldaproj
