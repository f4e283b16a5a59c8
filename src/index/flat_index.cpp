// Exact inner-product search: the answer corpus search for small and medium
// corpora, and the reference that approximate indexes are measured against.
#include <algorithm>
#include <string>

#include "index/top_k.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/index.hpp"

namespace ldaproj {

void FlatIndex::add(const Matrix& vectors, const std::vector<std::int64_t>& labels) {
  if (vectors.rows != labels.size()) {
    throw InputError("index add: " + std::to_string(vectors.rows) + " vectors but " +
                     std::to_string(labels.size()) + " labels");
  }
  if (vectors.rows == 0) return;
  if (dim_ == 0) dim_ = vectors.cols;
  if (vectors.cols != dim_) {
    throw InputError("index add: vectors have dimension " + std::to_string(vectors.cols) +
                     ", index has " + std::to_string(dim_));
  }
  vectors_.cols = dim_;
  vectors_.rows += vectors.rows;
  vectors_.data.insert(vectors_.data.end(), vectors.data.begin(), vectors.data.end());
  labels_.insert(labels_.end(), labels.begin(), labels.end());
}

std::vector<std::vector<Hit>> FlatIndex::search(const Matrix& queries, std::size_t k) const {
  std::vector<std::vector<Hit>> results(queries.rows);
  if (queries.rows == 0 || labels_.empty() || k == 0) return results;
  if (queries.cols != dim_) {
    throw InputError("index search: queries have dimension " + std::to_string(queries.cols) +
                     ", index has " + std::to_string(dim_));
  }
  // Blocked: memory stays a few MB per thread however many queries and vectors there are.
  const detail::TopK best =
      detail::top_k_inner_product(queries.data.data(), queries.rows, vectors_.data.data(), vectors_.rows, dim_, k);
  for (std::size_t q = 0; q < queries.rows; ++q) {
    results[q].reserve(best.k);
    for (std::size_t i = 0; i < best.k; ++i) {
      results[q].push_back({labels_[best.index[q * best.k + i]], best.score[q * best.k + i]});
    }
  }
  return results;
}

std::size_t FlatIndex::memory_bytes() const {
  return vectors_.data.size() * sizeof(float) + labels_.size() * sizeof(std::int64_t);
}

double recall_at_k(const std::vector<std::vector<Hit>>& exact, const std::vector<std::vector<Hit>>& approximate,
                   std::size_t k) {
  if (exact.size() != approximate.size()) {
    throw InputError("recall: " + std::to_string(exact.size()) + " exact result lists but " +
                     std::to_string(approximate.size()) + " approximate ones");
  }
  if (exact.empty() || k == 0) return 1.0;
  double total = 0.0;
  for (std::size_t q = 0; q < exact.size(); ++q) {
    const std::size_t want = std::min(k, exact[q].size());
    if (want == 0) {
      total += 1.0;
      continue;
    }
    std::size_t found = 0;
    for (std::size_t i = 0; i < want; ++i) {
      for (std::size_t j = 0; j < std::min(k, approximate[q].size()); ++j) {
        if (approximate[q][j].label == exact[q][i].label) {
          ++found;
          break;
        }
      }
    }
    total += static_cast<double>(found) / static_cast<double>(want);
  }
  return total / static_cast<double>(exact.size());
}

}  // namespace ldaproj
