// Blocked exact top-k: one sgemm per (block of queries, block of base rows)
// into a small scores buffer, then a bounded heap per query that most scores
// fail to enter after the first block. Work is split over query blocks, and
// over base ranges too when there are fewer query blocks than threads (a
// small batch against a large base), with the partial lists merged at the end.
#include "index/top_k.hpp"

#include <cblas.h>

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "common/parallel.hpp"

namespace ldaproj::detail {

namespace {

constexpr std::size_t kQueryBlock = 512;
constexpr std::size_t kBaseBlock = 2048;  // 512 x 2048 scores = 4 MiB

struct Entry {
  float score;
  std::uint32_t index;
};
// a ranks before b.
inline bool before(const Entry& a, const Entry& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// The k best entries seen, as a heap whose front is the worst kept.
class Bounded {
 public:
  void reset(std::size_t k) {
    k_ = k;
    heap_.clear();
    heap_.reserve(k);
  }
  // Base rows arrive in increasing order, so an equal score never displaces.
  float threshold() const { return heap_.size() < k_ ? -std::numeric_limits<float>::infinity() : heap_.front().score; }
  bool full() const { return heap_.size() >= k_; }
  void offer(float score, std::uint32_t index) {
    if (heap_.size() < k_) {
      heap_.push_back({score, index});
      std::push_heap(heap_.begin(), heap_.end(), before);
    } else if (score > heap_.front().score) {
      std::pop_heap(heap_.begin(), heap_.end(), before);
      heap_.back() = {score, index};
      std::push_heap(heap_.begin(), heap_.end(), before);
    }
  }
  std::vector<Entry>& entries() { return heap_; }

 private:
  std::size_t k_ = 0;
  std::vector<Entry> heap_;
};

}  // namespace

TopK top_k_inner_product(const float* queries, std::size_t rows, const float* base, std::size_t base_rows,
                         std::size_t dim, std::size_t k, int threads) {
  if (base_rows > std::numeric_limits<std::uint32_t>::max()) {
    throw std::length_error("top_k_inner_product: more base rows than 32-bit indexes hold");
  }
  TopK out;
  out.k = std::min(k, base_rows);
  if (rows == 0 || out.k == 0) return out;
  out.index.resize(rows * out.k);
  out.score.resize(rows * out.k);
  const int cores = threads > 0 ? threads : available_cores();
  const std::size_t query_blocks = (rows + kQueryBlock - 1) / kQueryBlock;
  const std::size_t base_blocks = (base_rows + kBaseBlock - 1) / kBaseBlock;
  // Split the base only when the query blocks alone cannot keep the threads busy.
  const std::size_t ranges =
      query_blocks >= static_cast<std::size_t>(cores) ? 1
                                                      : std::min<std::size_t>(base_blocks, static_cast<std::size_t>(cores));
  const std::size_t blocks_per_range = (base_blocks + ranges - 1) / ranges;
  // partial[(range * rows + q) * k ...]: each range's best, merged below.
  std::vector<Entry> partial(ranges > 1 ? ranges * rows * out.k : 0);
  std::vector<std::size_t> partial_size(ranges > 1 ? ranges * rows : 0, 0);

  use_blas_threads(1);
  parallel_for(query_blocks * ranges, cores, [&](std::size_t task) {
    const std::size_t qb = task / ranges, range = task % ranges;
    const std::size_t q0 = qb * kQueryBlock, q1 = std::min(rows, q0 + kQueryBlock), nq = q1 - q0;
    const std::size_t b_begin = std::min(base_rows, range * blocks_per_range * kBaseBlock);
    const std::size_t b_end = std::min(base_rows, (range + 1) * blocks_per_range * kBaseBlock);
    std::vector<Bounded> best(nq);
    for (auto& b : best) b.reset(out.k);
    std::vector<float> scores(nq * kBaseBlock);
    for (std::size_t b0 = b_begin; b0 < b_end; b0 += kBaseBlock) {
      const std::size_t nb = std::min(kBaseBlock, b_end - b0);
      if (nq == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(nb), static_cast<int>(dim), 1.0f, base + b0 * dim,
                    static_cast<int>(dim), queries + q0 * dim, 1, 0.0f, scores.data(), 1);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nq), static_cast<int>(nb),
                    static_cast<int>(dim), 1.0f, queries + q0 * dim, static_cast<int>(dim), base + b0 * dim,
                    static_cast<int>(dim), 0.0f, scores.data(), static_cast<int>(nb));
      }
      for (std::size_t r = 0; r < nq; ++r) {
        const float* s = scores.data() + r * nb;
        Bounded& heap = best[r];
        std::size_t j = 0;
        for (; j < nb && !heap.full(); ++j) heap.offer(s[j], static_cast<std::uint32_t>(b0 + j));
        float threshold = heap.threshold();
        for (; j < nb; ++j) {
          if (s[j] > threshold) {
            heap.offer(s[j], static_cast<std::uint32_t>(b0 + j));
            threshold = heap.threshold();
          }
        }
      }
    }
    for (std::size_t r = 0; r < nq; ++r) {
      std::vector<Entry>& e = best[r].entries();
      std::sort(e.begin(), e.end(), before);
      if (ranges == 1) {
        for (std::size_t i = 0; i < e.size(); ++i) {
          out.index[(q0 + r) * out.k + i] = e[i].index;
          out.score[(q0 + r) * out.k + i] = e[i].score;
        }
      } else {
        std::copy(e.begin(), e.end(), partial.begin() + static_cast<std::ptrdiff_t>((range * rows + q0 + r) * out.k));
        partial_size[range * rows + q0 + r] = e.size();
      }
    }
  });
  if (ranges > 1) {
    std::vector<Entry> merged;
    for (std::size_t q = 0; q < rows; ++q) {
      merged.clear();
      for (std::size_t range = 0; range < ranges; ++range) {
        const auto first = partial.begin() + static_cast<std::ptrdiff_t>((range * rows + q) * out.k);
        merged.insert(merged.end(), first, first + static_cast<std::ptrdiff_t>(partial_size[range * rows + q]));
      }
      std::partial_sort(merged.begin(), merged.begin() + static_cast<std::ptrdiff_t>(out.k), merged.end(), before);
      for (std::size_t i = 0; i < out.k; ++i) {
        out.index[q * out.k + i] = merged[i].index;
        out.score[q * out.k + i] = merged[i].score;
      }
    }
  }
  return out;
}

}  // namespace ldaproj::detail
