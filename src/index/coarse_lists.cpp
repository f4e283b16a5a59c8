// Spherical k-means lists and the probed top-k join. The join sorts the
// queries by their nearest list and works through blocks of them, so a block
// shares most of its probed lists: each (block, list) pair is one sgemm of
// the block's queries that probe the list against the list's vectors, which
// are copied list by list into one contiguous buffer first.
#include "index/coarse_lists.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "common/parallel.hpp"

namespace ldaproj::detail {

namespace {

constexpr std::size_t kJoinBlock = 4096;

struct Entry {
  float score;
  std::uint32_t index;
};
inline bool before(const Entry& a, const Entry& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// Nearest centroid of every row.
std::vector<std::uint32_t> nearest_list(const Matrix& vectors, const Matrix& centroids, int threads) {
  const TopK best = top_k_inner_product(vectors.data.data(), vectors.rows, centroids.data.data(), centroids.rows,
                                        vectors.cols, 1, threads);
  return best.index;
}

// Centroid of each list = normalised sum of its vectors; empty lists keep theirs.
void recentre(Matrix& centroids, const Matrix& vectors, const std::vector<std::uint32_t>& list_of) {
  const std::size_t d = vectors.cols;
  std::vector<double> sums(centroids.rows * d, 0.0);
  std::vector<std::size_t> count(centroids.rows, 0);
  for (std::size_t r = 0; r < vectors.rows; ++r) {
    double* s = sums.data() + std::size_t{list_of[r]} * d;
    const float* v = vectors.row(r);
    for (std::size_t j = 0; j < d; ++j) s[j] += v[j];
    ++count[list_of[r]];
  }
  for (std::size_t l = 0; l < centroids.rows; ++l) {
    const double* s = sums.data() + l * d;
    double sq = 0;
    for (std::size_t j = 0; j < d; ++j) sq += s[j] * s[j];
    if (count[l] == 0 || !(sq > 1e-24)) continue;
    const double inv = 1.0 / std::sqrt(sq);
    for (std::size_t j = 0; j < d; ++j) centroids(l, j) = static_cast<float>(s[j] * inv);
  }
}

void fill_members(CoarseLists& lists) {
  lists.members.assign(lists.centroids.rows, {});
  for (std::size_t r = 0; r < lists.list_of.size(); ++r) {
    lists.members[lists.list_of[r]].push_back(static_cast<std::uint32_t>(r));
  }
}

}  // namespace

std::size_t coarse_list_count(std::size_t vectors, std::size_t probe) {
  if (vectors == 0) return 1;
  const double balanced = std::sqrt(double(std::max<std::size_t>(probe, 1)) * double(vectors));
  return std::clamp<std::size_t>(static_cast<std::size_t>(balanced), 1, vectors);
}

CoarseLists build_coarse_lists(const Matrix& vectors, std::size_t lists, int iterations, int threads) {
  if (vectors.rows > std::numeric_limits<std::uint32_t>::max()) {
    throw std::length_error("build_coarse_lists: more vectors than 32-bit indexes hold");
  }
  CoarseLists out;
  const std::size_t n = vectors.rows, d = vectors.cols;
  lists = std::clamp<std::size_t>(lists, 1, std::max<std::size_t>(n, 1));
  out.centroids = Matrix(lists, d);
  if (n == 0) {
    out.members.assign(lists, {});
    return out;
  }
  for (std::size_t l = 0; l < lists; ++l) {
    const float* v = vectors.row(l * n / lists);
    std::copy(v, v + d, out.centroids.row(l));
  }
  for (int it = 0; it < iterations; ++it) {
    out.list_of = nearest_list(vectors, out.centroids, threads);
    recentre(out.centroids, vectors, out.list_of);
  }
  out.list_of = nearest_list(vectors, out.centroids, threads);
  fill_members(out);
  return out;
}

void reassign_coarse_lists(CoarseLists& lists, const Matrix& vectors, int threads) {
  if (vectors.rows != lists.list_of.size()) throw std::invalid_argument("reassign_coarse_lists: vector count changed");
  lists.list_of = nearest_list(vectors, lists.centroids, threads);
  recentre(lists.centroids, vectors, lists.list_of);
  fill_members(lists);
}

TopK probe_top_k(const CoarseLists& lists, const Matrix& vectors, const Matrix& queries, std::size_t k,
                 std::size_t probe, int threads) {
  const std::size_t d = vectors.cols, m = queries.rows;
  TopK out;
  out.k = std::min(k, vectors.rows);
  if (m == 0 || out.k == 0) return out;
  out.index.assign(m * out.k, std::numeric_limits<std::uint32_t>::max());
  out.score.assign(m * out.k, -std::numeric_limits<float>::infinity());
  const int cores = threads > 0 ? threads : available_cores();
  const TopK near = top_k_inner_product(queries.data.data(), m, lists.centroids.data.data(), lists.lists(), d,
                                        std::min(probe, lists.lists()), cores);
  const std::size_t p = near.k;

  // The vectors list by list, and where each list starts.
  std::vector<std::size_t> start(lists.lists() + 1, 0);
  for (std::size_t l = 0; l < lists.lists(); ++l) start[l + 1] = start[l] + lists.members[l].size();
  Matrix packed(start.back(), d);
  std::vector<std::uint32_t> packed_id(start.back());
  for (std::size_t l = 0; l < lists.lists(); ++l) {
    for (std::size_t i = 0; i < lists.members[l].size(); ++i) {
      const std::uint32_t v = lists.members[l][i];
      std::copy(vectors.row(v), vectors.row(v) + d, packed.row(start[l] + i));
      packed_id[start[l] + i] = v;
    }
  }
  // Queries in the order of their nearest list, so a block shares its lists.
  std::vector<std::uint32_t> order(m);
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return near.index[a * p] < near.index[b * p]; });

  use_blas_threads(1);
  const std::size_t blocks = (m + kJoinBlock - 1) / kJoinBlock;
  parallel_for(blocks, cores, [&](std::size_t b) {
    const std::size_t b0 = b * kJoinBlock, b1 = std::min(m, b0 + kJoinBlock);
    // (list, position in block) pairs, grouped by list.
    std::vector<std::pair<std::uint32_t, std::uint32_t>> probes;
    probes.reserve((b1 - b0) * p);
    for (std::size_t i = b0; i < b1; ++i) {
      for (std::size_t j = 0; j < p; ++j) {
        probes.emplace_back(near.index[std::size_t{order[i]} * p + j], static_cast<std::uint32_t>(i - b0));
      }
    }
    std::sort(probes.begin(), probes.end());
    std::vector<std::vector<Entry>> heap(b1 - b0);
    for (auto& h : heap) h.reserve(out.k);
    std::vector<float> gathered, scores;
    for (std::size_t first = 0; first < probes.size();) {
      const std::uint32_t list = probes[first].first;
      std::size_t last = first;
      while (last < probes.size() && probes[last].first == list) ++last;
      const std::size_t rows = last - first, size = start[list + 1] - start[list];
      if (size > 0) {
        if (gathered.size() < rows * d) gathered.resize(rows * d);
        for (std::size_t i = 0; i < rows; ++i) {
          const float* q = queries.row(order[b0 + probes[first + i].second]);
          std::copy(q, q + d, gathered.data() + i * d);
        }
        if (scores.size() < rows * size) scores.resize(rows * size);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(size), int(d), 1.0f, gathered.data(),
                    int(d), packed.row(start[list]), int(d), 0.0f, scores.data(), int(size));
        for (std::size_t i = 0; i < rows; ++i) {
          std::vector<Entry>& h = heap[probes[first + i].second];
          const float* s = scores.data() + i * size;
          for (std::size_t j = 0; j < size; ++j) {
            const Entry e{s[j], packed_id[start[list] + j]};
            if (h.size() < out.k) {
              h.push_back(e);
              std::push_heap(h.begin(), h.end(), before);
            } else if (before(e, h.front())) {
              std::pop_heap(h.begin(), h.end(), before);
              h.back() = e;
              std::push_heap(h.begin(), h.end(), before);
            }
          }
        }
      }
      first = last;
    }
    for (std::size_t i = 0; i < heap.size(); ++i) {
      std::sort(heap[i].begin(), heap[i].end(), before);
      const std::size_t q = order[b0 + i];
      for (std::size_t j = 0; j < heap[i].size(); ++j) {
        out.index[q * out.k + j] = heap[i][j].index;
        out.score[q * out.k + j] = heap[i][j].score;
      }
    }
  });
  return out;
}

}  // namespace ldaproj::detail
