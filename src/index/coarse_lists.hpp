// A coarse partition of unit vectors into lists by spherical k-means (the
// coarse quantizer of an IVF index), and the approximate k-nearest-neighbour
// join through it: each query is scored exactly against the vectors of the
// `probe` lists whose centroids are nearest to it. Used where an exact
// queries x vectors scan is too slow, e.g. finding each training question's
// competing keys among 100k heads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "index/top_k.hpp"
#include "ldaproj/matrix.hpp"

namespace ldaproj::detail {

struct CoarseLists {
  Matrix centroids;                               // lists x dim, unit rows
  std::vector<std::uint32_t> list_of;             // vector -> its list
  std::vector<std::vector<std::uint32_t>> members;  // list -> its vectors, ascending
  std::size_t lists() const { return centroids.rows; }
};

// About sqrt(probe * n) lists balances scoring the list centroids against
// scoring the probed lists' vectors; at least 1, at most n.
std::size_t coarse_list_count(std::size_t vectors, std::size_t probe);

// Spherical k-means over the unit rows of `vectors`: centroids start at
// evenly spaced rows (deterministic), then `iterations` rounds of assigning
// every vector to its nearest centroid and re-centring. Empty lists keep
// their centroid.
CoarseLists build_coarse_lists(const Matrix& vectors, std::size_t lists, int iterations, int threads = 0);

// After the vectors moved (same count): assign each to its nearest centroid
// and re-centre the lists once.
void reassign_coarse_lists(CoarseLists& lists, const Matrix& vectors, int threads = 0);

// The k best vectors (by inner product) of each query among the vectors of
// its `probe` nearest lists; fewer than k when those lists hold fewer.
// Entries past a query's found count have score -inf and index UINT32_MAX.
TopK probe_top_k(const CoarseLists& lists, const Matrix& vectors, const Matrix& queries, std::size_t k,
                 std::size_t probe, int threads = 0);

}  // namespace ldaproj::detail
