// Nearest-neighbour search over unit vectors by inner product (cosine).
#pragma once
#include <cstdint>
#include <vector>

#include "ldaproj/matrix.hpp"

namespace ldaproj {

struct Hit {
  std::int64_t label = 0;  // what the caller attached to the vector
  float score = 0.0f;      // inner product (cosine for unit vectors)
};

// Exact search: every query against every stored vector, one GEMM per batch.
class FlatIndex {
 public:
  explicit FlatIndex(std::size_t dim = 0) : dim_(dim) {}
  // Appends vectors (rows) with their labels. InputError on dimension mismatch.
  void add(const Matrix& vectors, const std::vector<std::int64_t>& labels);
  // Top-k hits per query, best first (ties broken by insertion order).
  std::vector<std::vector<Hit>> search(const Matrix& queries, std::size_t k) const;
  std::size_t size() const { return labels_.size(); }
  std::size_t dim() const { return dim_; }

 private:
  std::size_t dim_;
  Matrix vectors_;
  std::vector<std::int64_t> labels_;
};

}  // namespace ldaproj
