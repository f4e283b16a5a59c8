// The sparse teacher: exact routing restricted to the heads an HNSW graph
// over the centroids returns as nearest, so a query costs a graph search plus
// route_k rows instead of a pass over all n heads.
#include <algorithm>
#include <cmath>
#include <string>

#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

SparseMultiHeadProjection::SparseMultiHeadProjection(MultiHeadProjection dense, HnswOptions index_options)
    : dense_(std::move(dense)) {
  if (dense_.num_heads() == 0) throw InputError("sparse teacher: the projection has no heads");
  auto index = std::make_shared<HnswIndex>(dense_.dim(), index_options);
  std::vector<std::int64_t> labels(dense_.num_heads());
  for (std::size_t h = 0; h < labels.size(); ++h) labels[h] = static_cast<std::int64_t>(h);
  index->add(dense_.centroids(), labels);
  index_ = std::move(index);
}

Matrix SparseMultiHeadProjection::project(const Matrix& queries, float temperature, std::size_t route_k,
                                          std::vector<SparseRouting>* routing) const {
  if (!(temperature > 0.0f) || !std::isfinite(temperature)) {
    throw InputError("temperature must be a positive finite number, got " + std::to_string(temperature));
  }
  if (route_k == 0) throw InputError("route-k must be at least 1");
  if (queries.cols != dense_.dim()) {
    throw InputError("query embeddings have dimension " + std::to_string(queries.cols) +
                     ", the projection expects " + std::to_string(dense_.dim()));
  }
  Matrix q = queries;
  normalize_rows(q, "query");
  const std::size_t n = dense_.num_heads(), d = dense_.dim();
  route_k = std::min(route_k, n);
  const auto hits = index_->search(q, route_k);
  Matrix p(q.rows, d);
  if (routing) routing->assign(q.rows, {});
  std::vector<float> weights, row(d);
  for (std::size_t i = 0; i < q.rows; ++i) {
    const std::vector<Hit>& found = hits[i];  // best first
    weights.resize(found.size());
    for (std::size_t j = 0; j < found.size(); ++j) weights[j] = found[j].score;
    const float top = found.front().score, last = found.back().score;
    softmax_inplace(weights.data(), weights.size(), temperature);
    float* out = p.row(i);
    for (std::size_t j = 0; j < found.size(); ++j) {
      dense_.answer_row(static_cast<std::size_t>(found[j].label), row.data());
      for (std::size_t c = 0; c < d; ++c) out[c] += weights[j] * row[c];
    }
    if (routing) {
      SparseRouting& r = (*routing)[i];
      double kept = 0.0;
      for (const Hit& h : found) kept += std::exp((static_cast<double>(h.score) - top) / temperature);
      const double left_out =
          static_cast<double>(n - found.size()) * std::exp((static_cast<double>(last) - top) / temperature);
      r.uncovered_mass_bound = static_cast<float>(left_out / (kept + left_out));
      for (std::size_t j = 0; j < found.size(); ++j) {
        r.heads.push_back(static_cast<std::size_t>(found[j].label));
        r.weights.push_back(weights[j]);
        r.similarity.push_back(found[j].score);
      }
    }
  }
  normalize_rows(p, "projected query");
  return p;
}

}  // namespace ldaproj
