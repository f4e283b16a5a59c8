// Nearest-neighbour search over unit vectors by inner product (cosine):
// exact (FlatIndex) and approximate (HnswIndex), behind one batch interface.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "ldaproj/matrix.hpp"

namespace ldaproj {

struct Hit {
  std::int64_t label = 0;  // what the caller attached to the vector
  float score = 0.0f;      // inner product (cosine for unit vectors)
};

class Index {
 public:
  virtual ~Index() = default;
  // Appends vectors (rows) with their labels. InputError on dimension mismatch.
  virtual void add(const Matrix& vectors, const std::vector<std::int64_t>& labels) = 0;
  // Top-k hits per query, best first. Safe to call from several threads.
  virtual std::vector<std::vector<Hit>> search(const Matrix& queries, std::size_t k) const = 0;
  virtual std::size_t size() const = 0;
  virtual std::size_t dim() const = 0;
  virtual std::size_t memory_bytes() const = 0;
};

// Exact search: every query against every stored vector, one GEMM per batch.
class FlatIndex final : public Index {
 public:
  explicit FlatIndex(std::size_t dim = 0) : dim_(dim) {}
  void add(const Matrix& vectors, const std::vector<std::int64_t>& labels) override;
  // Ties are broken by insertion order.
  std::vector<std::vector<Hit>> search(const Matrix& queries, std::size_t k) const override;
  std::size_t size() const override { return labels_.size(); }
  std::size_t dim() const override { return dim_; }
  std::size_t memory_bytes() const override;

 private:
  std::size_t dim_;
  Matrix vectors_;
  std::vector<std::int64_t> labels_;
};

struct HnswOptions {
  std::size_t m = 16;                 // graph degree: memory and recall grow with it
  std::size_t ef_construction = 200;  // build-time beam width
  std::size_t ef_search = 128;        // query-time beam width (at least k is used)
  unsigned seed = 100;
  int threads = 0;                    // build threads; 0 = every core
};

// Approximate search on a hierarchical navigable small-world graph
// (hnswlib). Recall against FlatIndex is measured in tests and benchmarks.
class HnswIndex final : public Index {
 public:
  explicit HnswIndex(std::size_t dim, HnswOptions options = {});
  ~HnswIndex() override;
  HnswIndex(HnswIndex&&) noexcept;
  HnswIndex& operator=(HnswIndex&&) noexcept;

  void add(const Matrix& vectors, const std::vector<std::int64_t>& labels) override;
  std::vector<std::vector<Hit>> search(const Matrix& queries, std::size_t k) const override;
  std::size_t size() const override;
  std::size_t dim() const override;
  std::size_t memory_bytes() const override;
  const HnswOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Fraction of the exact top-k labels that `approximate` also returned, averaged over queries.
double recall_at_k(const std::vector<std::vector<Hit>>& exact, const std::vector<std::vector<Hit>>& approximate,
                   std::size_t k);

}  // namespace ldaproj
