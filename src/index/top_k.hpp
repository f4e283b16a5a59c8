// Exact top-k by inner product in bounded memory: queries against a base of
// rows, blocked over both so that no queries x base matrix is ever built.
// The exact search of FlatIndex and the candidate search of key learning.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ldaproj::detail {

// The k best base rows of each query, best first: index[q * k + i] and
// score[q * k + i] for i < min(k, base_rows). Ties go to the lower base row.
struct TopK {
  std::size_t k = 0;  // entries per query (min of the requested k and the base size)
  std::vector<std::uint32_t> index;
  std::vector<float> score;
};

// queries: rows x dim, base: base_rows x dim, both row-major. Scores are
// computed by sgemm over blocks of queries and base rows (a few MB of
// scratch per thread); `threads` 0 = every core. Base rows must fit uint32.
TopK top_k_inner_product(const float* queries, std::size_t rows, const float* base, std::size_t base_rows,
                         std::size_t dim, std::size_t k, int threads = 0);

}  // namespace ldaproj::detail
