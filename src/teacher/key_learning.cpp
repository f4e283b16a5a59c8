// Discriminative keys: moves each head's keys (its unit centroid, or several
// sub-keys per head) so that the teacher's routing softmax puts each training
// question on its own cluster's head (cross-entropy, full-batch Adam on the
// sphere), optionally together with a query adapter q' = normalise(q + W q).
// Memory is bounded at any size: up to KeyLearningOptions::exact_up_to keys the
// softmax is exact over every key with the questions streamed in blocks;
// beyond, each question is scored against its own head's keys and its nearest
// competitors (an exact blocked top-k search, refreshed as the keys move).
// The centroid is where it starts; the values (answers) are untouched.
// Also the sub-key start (k-means per head) and the adapter's query-time map.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/gemm.hpp"
#include "common/parallel.hpp"
#include "index/coarse_lists.hpp"
#include "index/top_k.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"
#include "teacher/routing_kernels.hpp"

namespace ldaproj {

namespace {

// Adam with bias correction on one parameter block.
struct Adam {
  std::vector<float> first, second;
  explicit Adam(std::size_t size) : first(size, 0.0f), second(size, 0.0f) {}
  static constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;
  // The bias corrections of one step (counted from 1) at rate lr.
  struct Step {
    double lr, c1, c2;
    Step(double rate, std::size_t step)
        : lr(rate), c1(1.0 - std::pow(kBeta1, double(step))), c2(1.0 - std::pow(kBeta2, double(step))) {}
  };
  // Moves parameter[i] against gradient g.
  void update(float& parameter, std::size_t i, double g, const Step& s) {
    first[i] = static_cast<float>(kBeta1 * first[i] + (1 - kBeta1) * g);
    second[i] = static_cast<float>(kBeta2 * second[i] + (1 - kBeta2) * g * g);
    parameter -= static_cast<float>(s.lr * (first[i] / s.c1) / (std::sqrt(second[i] / s.c2) + kEps));
  }
};

// The candidates' rows are scattered over the key matrix: asking for the
// row after next while this one is used hides most of the memory latency.
inline void prefetch_row(const float* row, std::size_t n) {
  for (std::size_t j = 0; j < n; j += 16) __builtin_prefetch(row + j);
}

inline void axpy(float alpha, const float* x, float* y, std::size_t n) {
  for (std::size_t j = 0; j < n; ++j) y[j] += alpha * x[j];
}

}  // namespace

Matrix adapt_queries(const Matrix& adapter, const Matrix& queries) {
  Matrix q = queries;
  normalize_rows(q, "query");
  if (adapter.rows == 0) return q;
  if (adapter.rows != q.cols || adapter.cols != q.cols) {
    throw InputError("query adapter is " + std::to_string(adapter.rows) + "x" + std::to_string(adapter.cols) +
                     ", queries have dimension " + std::to_string(q.cols));
  }
  Matrix moved;
  detail::gemm_abt(q, adapter, moved);  // row form of W q
  for (std::size_t i = 0; i < q.data.size(); ++i) moved.data[i] += q.data[i];
  normalize_rows(moved, "adapted query");
  return moved;
}

Matrix kmeans_sub_keys(const Matrix& questions, std::size_t k, int iterations) {
  if (questions.rows == 0) throw InputError("kmeans_sub_keys: no questions");
  Matrix q = questions;
  normalize_rows(q, "question");
  k = std::min(k, q.rows);
  const std::size_t d = q.cols;
  // Deterministic farthest-point start: the question nearest the mean, then
  // each time the question least similar to every key chosen so far.
  std::vector<double> mean(d, 0.0);
  for (std::size_t r = 0; r < q.rows; ++r)
    for (std::size_t j = 0; j < d; ++j) mean[j] += q(r, j);
  auto dot = [&](const float* a, const float* b) {
    double s = 0;
    for (std::size_t j = 0; j < d; ++j) s += double(a[j]) * b[j];
    return s;
  };
  std::size_t first = 0;
  double best = -std::numeric_limits<double>::infinity();
  for (std::size_t r = 0; r < q.rows; ++r) {
    double s = 0;
    for (std::size_t j = 0; j < d; ++j) s += mean[j] * q(r, j);
    if (s > best) best = s, first = r;
  }
  Matrix keys(k, d);
  std::copy(q.row(first), q.row(first) + d, keys.row(0));
  std::vector<double> nearest(q.rows, -2.0);
  for (std::size_t c = 1; c < k; ++c) {
    std::size_t pick = 0;
    double lowest = std::numeric_limits<double>::infinity();
    for (std::size_t r = 0; r < q.rows; ++r) {
      nearest[r] = std::max(nearest[r], dot(q.row(r), keys.row(c - 1)));
      if (nearest[r] < lowest) lowest = nearest[r], pick = r;
    }
    std::copy(q.row(pick), q.row(pick) + d, keys.row(c));
  }
  // Spherical k-means: assign by cosine, key = normalised mean of its questions.
  std::vector<std::size_t> assigned(q.rows, 0);
  for (int it = 0; it < iterations; ++it) {
    for (std::size_t r = 0; r < q.rows; ++r) {
      double top = -std::numeric_limits<double>::infinity();
      for (std::size_t c = 0; c < k; ++c) {
        const double s = dot(q.row(r), keys.row(c));
        if (s > top) top = s, assigned[r] = c;
      }
    }
    Matrix sums(k, d);
    std::vector<std::size_t> count(k, 0);
    for (std::size_t r = 0; r < q.rows; ++r) {
      ++count[assigned[r]];
      for (std::size_t j = 0; j < d; ++j) sums(assigned[r], j) += q(r, j);
    }
    for (std::size_t c = 0; c < k; ++c) {
      // An emptied key keeps its place; a zero mean (opposite questions) too.
      double norm = 0;
      for (std::size_t j = 0; j < d; ++j) norm += double(sums(c, j)) * sums(c, j);
      if (count[c] == 0 || norm <= 1e-24) continue;
      std::copy(sums.row(c), sums.row(c) + d, keys.row(c));
    }
    normalize_rows(keys, "sub-key");
  }
  return keys;
}

KeyLearningReport learn_keys(Matrix& keys, const Matrix& questions, const std::vector<std::size_t>& head_of_question,
                             float temperature, const KeyLearningOptions& options) {
  std::vector<std::size_t> head_of_key(keys.rows);
  for (std::size_t i = 0; i < keys.rows; ++i) head_of_key[i] = i;
  return learn_keys(keys, head_of_key, nullptr, questions, head_of_question, temperature, options);
}

namespace {

// One question's cross-entropy -log P(own head) over a list of keys (all of
// them, or its candidates): turns the scores into dL/ds (before the 1/(t m)
// scale) in place. A head's probability is the sum over its keys'.
class RowSoftmax {
 public:
  RowSoftmax(const std::vector<std::size_t>& head_of_key, std::size_t heads, float temperature, detail::Isa isa)
      : head_of_key_(head_of_key), temperature_(temperature), isa_(isa), mass_(heads, 0.0) {
    one_key_per_head_ = head_of_key.size() == heads;
    for (std::size_t i = 0; one_key_per_head_ && i < head_of_key.size(); ++i) one_key_per_head_ = head_of_key[i] == i;
  }

  struct Outcome {
    double loss = 0;
    bool correct = false;
  };

  // s[0, u): scores of keys ids[0, u) (ids null: keys 0..u-1), own head y.
  Outcome run(float* s, std::size_t u, const std::uint32_t* ids, std::size_t y) {
    auto key = [ids](std::size_t i) { return ids ? std::size_t{ids[i]} : i; };
    const float top = *std::max_element(s, s + u);
    float own_top = -std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < u; ++i)
      if (head_of_key_[key(i)] == y) own_top = std::max(own_top, s[i]);
    Outcome out;
    out.correct = heaviest(s, u, ids, y);
    const float inv_t = 1.0f / temperature_;
    // The own head's share relative to its own best key: its keys' scores
    // before the exponentials overwrite them (few: one, or the sub-keys).
    own_scores_.clear();
    for (std::size_t i = 0; i < u; ++i)
      if (head_of_key_[key(i)] == y) own_scores_.push_back(s[i]);
    double own = 0;
    for (float v : own_scores_) own += std::exp(double(v - own_top) * inv_t);
    const double total = detail::exp_shifted(isa_, s, u, top, inv_t);
    out.loss = double(top - own_top) * inv_t + std::log(total) - std::log(own);
    const float inv_total = static_cast<float>(1.0 / total);
    std::size_t next_own = 0;
    for (std::size_t i = 0; i < u; ++i) {
      const float p = s[i] * inv_total;
      if (head_of_key_[key(i)] == y) {
        s[i] = p - static_cast<float>(std::exp(double(own_scores_[next_own++] - own_top) * inv_t) / own);
      } else {
        s[i] = p;
      }
    }
    return out;
  }

 private:
  // Whether head y gets the most mass (ties: the lowest head wins), from the raw scores.
  bool heaviest(const float* s, std::size_t u, const std::uint32_t* ids, std::size_t y) {
    auto key = [ids](std::size_t i) { return ids ? std::size_t{ids[i]} : i; };
    std::size_t best = std::numeric_limits<std::size_t>::max();
    if (one_key_per_head_) {
      float top = -std::numeric_limits<float>::infinity();
      for (std::size_t i = 0; i < u; ++i) {
        if (s[i] > top || (s[i] == top && key(i) < best)) top = s[i], best = key(i);
      }
      return best == y;
    }
    const float top = *std::max_element(s, s + u);
    touched_.clear();
    for (std::size_t i = 0; i < u; ++i) {
      const std::size_t h = head_of_key_[key(i)];
      if (mass_[h] == 0.0) touched_.push_back(h);
      mass_[h] += std::exp(double(s[i] - top) / temperature_);
    }
    double most = -1;
    for (std::size_t h : touched_) {
      if (mass_[h] > most || (mass_[h] == most && h < best)) most = mass_[h], best = h;
    }
    for (std::size_t h : touched_) mass_[h] = 0.0;
    return best == y;
  }

  const std::vector<std::size_t>& head_of_key_;
  float temperature_;
  detail::Isa isa_;
  bool one_key_per_head_ = false;
  std::vector<double> mass_;
  std::vector<std::size_t> touched_;
  std::vector<float> own_scores_;
};

// Candidate mode: the questions of one head, scored against that head's
// keys and the union of their nearest competitors.
struct Group {
  std::size_t row_begin, row_end;    // into Candidates::rows
  std::size_t key_begin, key_end;    // into Candidates::keys
};
struct Candidates {
  std::vector<std::uint32_t> rows;  // question rows, grouped by head
  std::vector<std::uint32_t> keys;  // each group's keys: its own first, then competitors
  std::vector<Group> groups;
};

// Pools every question's competitors (`near`: its best keys against the
// current keys, own head's keys among them) per head, at most `cap` per head
// (the best-scoring), and lays the groups out in `head_order`.
Candidates pool_candidates(const detail::TopK& near, const std::vector<std::size_t>& head_of_key,
                           const std::vector<std::vector<std::uint32_t>>& keys_of_head,
                           const std::vector<std::vector<std::uint32_t>>& rows_of_head,
                           const std::vector<std::uint32_t>& head_order, std::size_t per_question, std::size_t cap) {
  Candidates c;
  std::vector<std::pair<std::uint32_t, float>> pool;
  for (const std::uint32_t h : head_order) {
    if (rows_of_head[h].empty()) continue;
    Group g{c.rows.size(), 0, c.keys.size(), 0};
    c.rows.insert(c.rows.end(), rows_of_head[h].begin(), rows_of_head[h].end());
    g.row_end = c.rows.size();
    pool.clear();
    for (std::uint32_t r : rows_of_head[h]) {
      std::size_t taken = 0;
      for (std::size_t i = 0; i < near.k && taken < per_question; ++i) {
        const std::uint32_t k = near.index[std::size_t{r} * near.k + i];
        if (k == std::numeric_limits<std::uint32_t>::max()) break;  // fewer found
        if (head_of_key[k] == h) continue;
        pool.emplace_back(k, near.score[std::size_t{r} * near.k + i]);
        ++taken;
      }
    }
    // One entry per key with its best score, then the `cap` best, in key order.
    std::sort(pool.begin(), pool.end(), [](const auto& a, const auto& b) {
      return a.first < b.first || (a.first == b.first && a.second > b.second);
    });
    pool.erase(std::unique(pool.begin(), pool.end(), [](const auto& a, const auto& b) { return a.first == b.first; }),
               pool.end());
    if (pool.size() > cap) {
      std::nth_element(pool.begin(), pool.begin() + static_cast<std::ptrdiff_t>(cap), pool.end(),
                       [](const auto& a, const auto& b) {
                         return a.second > b.second || (a.second == b.second && a.first < b.first);
                       });
      pool.resize(cap);
      std::sort(pool.begin(), pool.end());
    }
    c.keys.insert(c.keys.end(), keys_of_head[h].begin(), keys_of_head[h].end());
    for (const auto& [k, score] : pool) c.keys.push_back(k);
    g.key_end = c.keys.size();
    c.groups.push_back(g);
  }
  return c;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

bool key_learning_is_exact(std::size_t keys, const KeyLearningOptions& options) {
  return keys <= options.exact_up_to || options.candidates == 0 || options.candidates >= keys;
}

std::size_t key_learning_memory(std::size_t keys, std::size_t questions, std::size_t dim, bool adapter,
                                const KeyLearningOptions& options) {
  const std::size_t threads =
      static_cast<std::size_t>(options.threads > 0 ? options.threads : detail::available_cores());
  const std::size_t f = sizeof(float);
  // Unit questions (and adapted ones plus their gradient), keys and raw keys,
  // two Adam moments, one gradient buffer per thread.
  std::size_t bytes = questions * dim * f * (adapter ? 3 : 1) + keys * dim * f * (4 + threads);
  if (key_learning_is_exact(keys, options)) {
    const std::size_t block = std::clamp<std::size_t>((std::size_t{1} << 22) / std::max<std::size_t>(keys, 1), 1, 1024);
    bytes += threads * block * keys * f;
  } else {
    // The per-question search lists and the pooled lists per head.
    bytes += questions * (options.candidates + 8) * (sizeof(std::uint32_t) + f) +
             questions * options.candidates * 2 * sizeof(std::uint32_t);
  }
  return bytes;
}

KeyLearningReport learn_keys(Matrix& keys, const std::vector<std::size_t>& head_of_key, Matrix* adapter,
                             const Matrix& questions, const std::vector<std::size_t>& head_of_question,
                             float temperature, const KeyLearningOptions& options) {
  const std::size_t n = keys.rows, d = keys.cols, m = questions.rows;
  if (questions.cols != d || head_of_question.size() != m || head_of_key.size() != n) {
    throw InputError("learn_keys: questions, keys and their heads do not match");
  }
  if (!(temperature > 0.0f) || !(options.lr > 0.0f)) throw InputError("learn_keys: temperature and lr must be > 0");
  if (adapter && (!(options.adapter_lr > 0.0f) || !(options.adapter_decay >= 0.0f))) {
    throw InputError("learn_keys: the adapter needs adapter_lr > 0 and adapter_decay >= 0");
  }
  if (n > std::numeric_limits<std::uint32_t>::max() || m > std::numeric_limits<std::uint32_t>::max()) {
    throw InputError("learn_keys: more keys or questions than 32-bit indexes hold");
  }
  const std::size_t heads = n == 0 ? 0 : *std::max_element(head_of_key.begin(), head_of_key.end()) + 1;
  std::vector<std::vector<std::uint32_t>> keys_of_head(heads), rows_of_head(heads);
  for (std::size_t i = 0; i < n; ++i) keys_of_head[head_of_key[i]].push_back(static_cast<std::uint32_t>(i));
  for (std::size_t r = 0; r < m; ++r) {
    const std::size_t h = head_of_question[r];
    if (h >= heads || keys_of_head[h].empty()) {
      throw InputError("learn_keys: a question names head " + std::to_string(h) + ", which has no key");
    }
    rows_of_head[h].push_back(static_cast<std::uint32_t>(r));
  }
  KeyLearningReport report;
  report.exact = key_learning_is_exact(n, options);
  report.candidates = report.exact ? n : options.candidates;
  if (n == 0 || m == 0) return report;
  const auto started = std::chrono::steady_clock::now();
  const int threads = options.threads > 0 ? options.threads : detail::available_cores();
  // Unit questions: the caller's rows when they already are (no copy of
  // what can be the largest matrix here), else a normalised copy.
  Matrix q_copy;
  if (!has_unit_rows(questions)) {
    q_copy = questions;
    normalize_rows(q_copy, "question");
  }
  const Matrix& q = q_copy.rows > 0 ? q_copy : questions;
  normalize_rows(keys, "key");
  if (adapter && (adapter->rows != d || adapter->cols != d)) *adapter = Matrix(d, d);

  // Adapted unit queries (with the adapter) and their norms before normalising.
  Matrix adapted;
  std::vector<double> z_norm;
  auto adapt = [&] {
    if (!adapter) return;
    detail::gemm_abt(q, *adapter, adapted);  // row form of W q
    z_norm.assign(m, 1.0);
    for (std::size_t i = 0; i < q.data.size(); ++i) adapted.data[i] += q.data[i];
    for (std::size_t r = 0; r < m; ++r) {
      float* z = adapted.row(r);
      double sq = 0;
      for (std::size_t j = 0; j < d; ++j) sq += double(z[j]) * z[j];
      z_norm[r] = std::sqrt(sq);
      if (!(z_norm[r] > 0) || !std::isfinite(z_norm[r])) throw Error("learn_keys: the adapter diverged");
      for (std::size_t j = 0; j < d; ++j) z[j] = static_cast<float>(z[j] / z_norm[r]);
    }
  };

  // Work is split into one contiguous range per thread, each with its own
  // gradient buffer (summed afterwards), so no two threads add into one row.
  const std::size_t tasks = static_cast<std::size_t>(std::max(1, threads));
  std::vector<Matrix> grad(tasks);
  Matrix dq;  // dL/d(adapted query), adapter only
  Candidates cand;
  std::vector<std::size_t> group_split;  // candidate mode: first group of each task
  auto split_groups = [&] {
    // Balanced by the scores each group computes.
    std::size_t total = 0;
    for (const Group& g : cand.groups) total += (g.row_end - g.row_begin) * (g.key_end - g.key_begin);
    group_split.assign(1, 0);
    std::size_t acc = 0;
    for (std::size_t i = 0; i < cand.groups.size(); ++i) {
      const Group& g = cand.groups[i];
      acc += (g.row_end - g.row_begin) * (g.key_end - g.key_begin);
      if (group_split.size() < tasks && acc * tasks >= total * group_split.size()) group_split.push_back(i + 1);
    }
    while (group_split.size() <= tasks) group_split.push_back(cand.groups.size());
  };
  const std::size_t block = std::clamp<std::size_t>((std::size_t{1} << 22) / n, 1, 1024);
  const detail::Isa isa = detail::best_isa(d);
  std::vector<std::vector<std::int32_t>> slot_of;  // per task: key -> its row in the tile buffer, or -1

  // One forward pass (loss, accuracy) and, when asked, the gradients.
  auto pass = [&](bool want_gradient, double& loss, double& accuracy) {
    const Matrix& unit = adapter ? adapted : q;
    if (want_gradient) {
      for (Matrix& g : grad) {
        if (g.rows != n) g = Matrix(n, d);
        else std::fill(g.data.begin(), g.data.end(), 0.0f);
      }
      if (adapter) dq = Matrix(m, d);
    }
    std::vector<double> task_loss(tasks, 0.0), task_correct(tasks, 0.0);
    slot_of.resize(tasks);
    detail::use_blas_threads(1);
    detail::parallel_for(tasks, threads, [&](std::size_t t) {
      RowSoftmax softmax(head_of_key, heads, temperature, isa);
      std::vector<float> s;
      if (report.exact) {
        const std::size_t blocks = (m + block - 1) / block;
        for (std::size_t b = blocks * t / tasks; b < blocks * (t + 1) / tasks; ++b) {
          const std::size_t r0 = b * block, rows = std::min(m, r0 + block) - r0;
          s.resize(rows * n);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(n), int(d), 1.0f, unit.row(r0), int(d),
                      keys.data.data(), int(d), 0.0f, s.data(), int(n));
          for (std::size_t r = 0; r < rows; ++r) {
            const auto o = softmax.run(s.data() + r * n, n, nullptr, head_of_question[r0 + r]);
            task_loss[t] += o.loss;
            task_correct[t] += o.correct ? 1.0 : 0.0;
          }
          if (!want_gradient) continue;
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(n), int(d), int(rows), 1.0f, s.data(), int(n),
                      unit.row(r0), int(d), 1.0f, grad[t].data.data(), int(d));
          if (adapter) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(d), int(n), 1.0f, s.data(), int(n),
                        keys.data.data(), int(d), 0.0f, dq.row(r0), int(d));
          }
        }
        return;
      }
      // Groups are laid out so that neighbours share competitors: their key
      // and gradient rows are mostly still in cache from the groups before.
      for (std::size_t gi = group_split[t]; gi < group_split[t + 1]; ++gi) {
        const Group& g = cand.groups[gi];
        const std::uint32_t* ids = cand.keys.data() + g.key_begin;
        const std::size_t u = g.key_end - g.key_begin, rows = g.row_end - g.row_begin;
        const std::uint32_t* row_ids = cand.rows.data() + g.row_begin;
        s.resize(rows * u);
        // Key-major: each key row is loaded once and stays in L1 for the group's rows.
        for (std::size_t i = 0; i < u; ++i) {
          const float* k = keys.row(ids[i]);
          if (i + 4 < u) prefetch_row(keys.row(ids[i + 4]), d);
          for (std::size_t r = 0; r < rows; ++r) s[r * u + i] = detail::dot(isa, unit.row(row_ids[r]), k, d);
        }
        for (std::size_t r = 0; r < rows; ++r) {
          const auto o = softmax.run(s.data() + r * u, u, ids, head_of_question[row_ids[r]]);
          task_loss[t] += o.loss;
          task_correct[t] += o.correct ? 1.0 : 0.0;
        }
        if (!want_gradient) continue;
        for (std::size_t i = 0; i < u; ++i) {
          float* gk = grad[t].row(ids[i]);
          if (i + 4 < u) prefetch_row(grad[t].row(ids[i + 4]), d);
          for (std::size_t r = 0; r < rows; ++r) axpy(s[r * u + i], unit.row(row_ids[r]), gk, d);
        }
        if (adapter) {
          for (std::size_t r = 0; r < rows; ++r) {
            float* out = dq.row(row_ids[r]);
            for (std::size_t i = 0; i < u; ++i) axpy(s[r * u + i], keys.row(ids[i]), out, d);
          }
        }
      }
    });
    loss = std::accumulate(task_loss.begin(), task_loss.end(), 0.0) / double(m);
    accuracy = std::accumulate(task_correct.begin(), task_correct.end(), 0.0) / double(m);
    if (!want_gradient || tasks == 1) return;
    // grad[0] += the others, split over rows.
    detail::parallel_for(tasks, threads, [&](std::size_t t) {
      const std::size_t r0 = n * t / tasks, r1 = n * (t + 1) / tasks;
      for (std::size_t other = 1; other < tasks; ++other) {
        for (std::size_t i = r0 * d; i < r1 * d; ++i) grad[0].data[i] += grad[other].data[i];
      }
    });
  };

  // The candidates: an exact scan of every key while that costs less than
  // the coarse lists' setup, else through the lists (built once from the
  // start keys, re-assigned at each later search as the keys move). Groups
  // are laid out list by list, so consecutive groups share competitors and
  // their key and gradient rows stay in cache.
  const bool use_lists = !report.exact && n > options.exact_search_up_to;
  detail::CoarseLists lists;
  std::vector<std::uint32_t> head_order(heads);
  std::iota(head_order.begin(), head_order.end(), 0u);
  auto refresh = [&] {
    const Matrix& unit = adapter ? adapted : q;
    std::size_t most_own = 0;
    for (const auto& k : keys_of_head) most_own = std::max(most_own, k.size());
    const std::size_t want = options.candidates + most_own;
    detail::TopK near;
    if (use_lists) {
      if (lists.lists() == 0) {
        lists = detail::build_coarse_lists(keys, detail::coarse_list_count(n, options.probe), 4, threads);
      } else {
        detail::reassign_coarse_lists(lists, keys, threads);
      }
      near = detail::probe_top_k(lists, keys, unit, want, options.probe, threads);
      std::stable_sort(head_order.begin(), head_order.end(), [&](std::uint32_t a, std::uint32_t b) {
        return lists.list_of[keys_of_head[a].front()] < lists.list_of[keys_of_head[b].front()];
      });
    } else {
      near = detail::top_k_inner_product(unit.data.data(), m, keys.data.data(), n, d, want, threads);
    }
    cand = pool_candidates(near, head_of_key, keys_of_head, rows_of_head, head_order, options.candidates,
                           options.candidates * 4);
    split_groups();
    ++report.refreshes;
  };

  // How much of the full softmax (over every key) a question's candidates
  // hold at the final keys, on an even sample of the questions: what the
  // candidate loss leaves out.
  auto candidate_mass = [&] {
    const Matrix& unit = adapter ? adapted : q;
    const std::size_t sample = std::min<std::size_t>(m, 1024);
    std::vector<std::size_t> group_of_row(m, 0);
    for (std::size_t gi = 0; gi < cand.groups.size(); ++gi) {
      for (std::size_t r = cand.groups[gi].row_begin; r < cand.groups[gi].row_end; ++r) group_of_row[cand.rows[r]] = gi;
    }
    Matrix rows(sample, d);
    for (std::size_t j = 0; j < sample; ++j) std::copy(unit.row(j * m / sample), unit.row(j * m / sample) + d, rows.row(j));
    const float inv_t = 1.0f / temperature;
    std::vector<double> top(sample, -std::numeric_limits<double>::infinity()), sum(sample, 0.0);
    constexpr std::size_t kBlock = 8192;
    std::vector<float> block_scores(sample * kBlock);
    detail::use_blas_threads(threads);
    for (std::size_t k0 = 0; k0 < n; k0 += kBlock) {
      const std::size_t kb = std::min(kBlock, n - k0);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(sample), int(kb), int(d), 1.0f, rows.data.data(), int(d),
                  keys.row(k0), int(d), 0.0f, block_scores.data(), int(kb));
      for (std::size_t j = 0; j < sample; ++j) {
        const float* sj = block_scores.data() + j * kb;
        const double block_top = double(*std::max_element(sj, sj + kb)) * inv_t;
        if (block_top > top[j]) {
          sum[j] *= std::exp(top[j] - block_top);
          top[j] = block_top;
        }
        for (std::size_t i = 0; i < kb; ++i) sum[j] += std::exp(double(sj[i]) * inv_t - top[j]);
      }
    }
    double share = 0;
    for (std::size_t j = 0; j < sample; ++j) {
      const Group& g = cand.groups[group_of_row[j * m / sample]];
      double in = 0;
      for (std::size_t i = g.key_begin; i < g.key_end; ++i) {
        in += std::exp(double(detail::dot(isa, rows.row(j), keys.row(cand.keys[i]), d)) * inv_t - top[j]);
      }
      share += std::min(1.0, in / sum[j]);
    }
    return share / double(sample);
  };

  Matrix raw = keys;  // parameters; the keys are their unit rows
  Adam key_adam(n * d), adapter_adam(adapter ? d * d : 0);
  const double scale = 1.0 / (double(temperature) * double(m));
  std::size_t next_checkpoint = 0;
  std::vector<std::size_t> checkpoints = options.checkpoints;
  std::sort(checkpoints.begin(), checkpoints.end());
  adapt();
  std::size_t epoch = 1;
  for (; epoch <= options.epochs; ++epoch) {
    bool refreshed = false;
    if (!report.exact && (epoch == 1 || (options.refresh_every > 0 && (epoch - 1) % options.refresh_every == 0))) {
      refresh();
      refreshed = true;
    }
    double loss = 0, accuracy = 0;
    pass(true, loss, accuracy);
    if (epoch == 1) report.initial_loss = loss, report.initial_accuracy = accuracy;
    if (adapter) {
      // dL/dq' = delta keys scale; through q' = z/|z|: (I - q'q'^T) dL/dq' / |z|; dL/dW = dZ^T q.
      for (std::size_t r = 0; r < m; ++r) {
        float* g = dq.row(r);
        const float* u = adapted.row(r);
        double along = 0;
        for (std::size_t j = 0; j < d; ++j) along += double(g[j]) * u[j];
        for (std::size_t j = 0; j < d; ++j) g[j] = static_cast<float>((g[j] - along * u[j]) * scale / z_norm[r]);
      }
      Matrix dw(d, d);
      detail::use_blas_threads(threads);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(d), int(d), int(m), 1.0f, dq.data.data(), int(d),
                  q.data.data(), int(d), 0.0f, dw.data.data(), int(d));
      const Adam::Step step(options.adapter_lr, epoch);
      for (std::size_t i = 0; i < d * d; ++i) {
        const double g = double(dw.data[i]) + double(options.adapter_decay) * adapter->data[i];
        adapter_adam.update(adapter->data[i], i, g, step);
      }
    }
    // dL/du = delta^T q' scale; through u = k/|k|: (I - u u^T) dL/du / |k|.
    const Adam::Step step(options.lr, epoch);
    detail::parallel_for(tasks, threads, [&](std::size_t t) {
      for (std::size_t i = n * t / tasks; i < n * (t + 1) / tasks; ++i) {
        float* k = raw.row(i);
        float* u = keys.row(i);
        const float* g = grad[0].row(i);
        double norm = 0, along = 0;
        for (std::size_t j = 0; j < d; ++j) norm += double(k[j]) * k[j];
        norm = std::sqrt(norm);
        for (std::size_t j = 0; j < d; ++j) along += double(g[j]) * u[j];
        for (std::size_t j = 0; j < d; ++j) {
          key_adam.update(k[j], i * d + j, (double(g[j]) - along * u[j]) * scale / norm, step);
        }
        double sq = 0;
        for (std::size_t j = 0; j < d; ++j) sq += double(k[j]) * k[j];
        if (!std::isfinite(sq) || sq <= 0.0) throw Error("learn_keys: key #" + std::to_string(i) + " diverged");
        const float inv = static_cast<float>(1.0 / std::sqrt(sq));
        for (std::size_t j = 0; j < d; ++j) u[j] = k[j] * inv;
      }
    });
    adapt();
    if (options.on_epoch) options.on_epoch({epoch, options.epochs, loss, accuracy, seconds_since(started), refreshed});
    while (next_checkpoint < checkpoints.size() && checkpoints[next_checkpoint] < epoch) ++next_checkpoint;
    if (next_checkpoint < checkpoints.size() && checkpoints[next_checkpoint] == epoch && options.on_checkpoint) {
      ++next_checkpoint;
      if (!options.on_checkpoint(epoch, keys, adapter)) {
        report.stopped_early = epoch < options.epochs;
        ++epoch;
        break;
      }
    }
  }
  report.epochs = epoch - 1;
  if (report.epochs == 0) {
    // No epoch ran: the loss of the start is also the final one.
    if (!report.exact) refresh();
    pass(false, report.initial_loss, report.initial_accuracy);
    report.final_loss = report.initial_loss, report.final_accuracy = report.initial_accuracy;
  } else {
    pass(false, report.final_loss, report.final_accuracy);
  }
  if (!report.exact) report.candidate_mass = candidate_mass();
  report.seconds = seconds_since(started);
  return report;
}

}  // namespace ldaproj
