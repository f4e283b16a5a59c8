// Approximate inner-product search over a navigable small-world graph, by
// hnswlib (header-only, built with this target's SIMD flags). Used for the
// sparse teacher's head routing and for answer search in large corpora.
#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <string>

#include "common/parallel.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/index.hpp"

namespace ldaproj {

struct HnswIndex::Impl {
  HnswOptions options;
  std::size_t dim = 0;
  hnswlib::InnerProductSpace space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> graph;
  std::vector<std::int64_t> labels;  // hnswlib label (insertion index) -> caller's label

  Impl(std::size_t d, HnswOptions o) : options(o), dim(d), space(d) {}
};

HnswIndex::HnswIndex(std::size_t dim, HnswOptions options) {
  if (dim == 0) throw InputError("HNSW index: dimension must be positive");
  if (options.m < 2) throw InputError("HNSW index: m must be at least 2");
  impl_ = std::make_unique<Impl>(dim, options);
}
HnswIndex::~HnswIndex() = default;
HnswIndex::HnswIndex(HnswIndex&&) noexcept = default;
HnswIndex& HnswIndex::operator=(HnswIndex&&) noexcept = default;

void HnswIndex::add(const Matrix& vectors, const std::vector<std::int64_t>& labels) {
  Impl& s = *impl_;
  if (vectors.rows != labels.size()) {
    throw InputError("index add: " + std::to_string(vectors.rows) + " vectors but " +
                     std::to_string(labels.size()) + " labels");
  }
  if (vectors.rows == 0) return;
  if (vectors.cols != s.dim) {
    throw InputError("index add: vectors have dimension " + std::to_string(vectors.cols) + ", index has " +
                     std::to_string(s.dim));
  }
  const std::size_t first = s.labels.size();
  if (!s.graph) {
    s.graph = std::make_unique<hnswlib::HierarchicalNSW<float>>(&s.space, vectors.rows, s.options.m,
                                                                 s.options.ef_construction, s.options.seed);
  } else {
    s.graph->resizeIndex(first + vectors.rows);
  }
  s.graph->setEf(s.options.ef_search);
  s.labels.insert(s.labels.end(), labels.begin(), labels.end());
  const int threads = s.options.threads > 0 ? s.options.threads : detail::available_cores();
  // hnswlib locks per node, so points can be inserted from several threads.
  constexpr std::size_t kChunk = 256;
  const std::size_t chunks = (vectors.rows + kChunk - 1) / kChunk;
  detail::parallel_for(chunks, threads, [&](std::size_t c) {
    const std::size_t end = std::min(vectors.rows, (c + 1) * kChunk);
    for (std::size_t i = c * kChunk; i < end; ++i) s.graph->addPoint(vectors.row(i), first + i);
  });
}

std::vector<std::vector<Hit>> HnswIndex::search(const Matrix& queries, std::size_t k) const {
  const Impl& s = *impl_;
  if (queries.cols != s.dim) {
    throw InputError("index search: queries have dimension " + std::to_string(queries.cols) + ", index has " +
                     std::to_string(s.dim));
  }
  std::vector<std::vector<Hit>> results(queries.rows);
  if (!s.graph || k == 0) return results;
  k = std::min(k, s.labels.size());
  for (std::size_t q = 0; q < queries.rows; ++q) {
    auto heap = s.graph->searchKnn(queries.row(q), k);  // farthest first
    std::vector<Hit>& out = results[q];
    out.resize(heap.size());
    for (std::size_t i = heap.size(); i-- > 0;) {
      const auto& [distance, id] = heap.top();
      out[i] = {s.labels[id], 1.0f - distance};  // inner-product space: distance = 1 - dot
      heap.pop();
    }
  }
  return results;
}

std::size_t HnswIndex::size() const { return impl_->labels.size(); }
std::size_t HnswIndex::dim() const { return impl_->dim; }
const HnswOptions& HnswIndex::options() const { return impl_->options; }

std::size_t HnswIndex::memory_bytes() const {
  const Impl& s = *impl_;
  if (!s.graph) return 0;
  // Level-0 block (vector + links + label per element) plus upper levels,
  // which hold about 1/m of the elements.
  const std::size_t level0 = s.graph->max_elements_ * s.graph->size_data_per_element_;
  const std::size_t upper = s.labels.size() / s.options.m * s.graph->size_links_per_element_;
  return level0 + upper + s.labels.size() * sizeof(std::int64_t);
}

}  // namespace ldaproj
