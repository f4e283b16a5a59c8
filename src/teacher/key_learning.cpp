// Discriminative keys: moves each head's keys (its unit centroid, or several
// sub-keys per head) so that the teacher's routing softmax puts each training
// question on its own cluster's head (cross-entropy, full-batch Adam on the
// sphere), optionally together with a query adapter q' = normalise(q + W q).
// The centroid is where it starts; the values (answers) are untouched.
// Also the sub-key start (k-means per head) and the adapter's query-time map.
#include <algorithm>
#include <cmath>
#include <limits>

#include "common/gemm.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

namespace {

// Adam with bias correction on one parameter block.
struct Adam {
  std::vector<float> first, second;
  explicit Adam(std::size_t size) : first(size, 0.0f), second(size, 0.0f) {}
  static constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;
  // Moves parameter[i] against gradient g at `lr`; `step` counts from 1.
  void update(float& parameter, std::size_t i, double g, double lr, std::size_t step) {
    const double c1 = 1.0 - std::pow(kBeta1, double(step)), c2 = 1.0 - std::pow(kBeta2, double(step));
    first[i] = static_cast<float>(kBeta1 * first[i] + (1 - kBeta1) * g);
    second[i] = static_cast<float>(kBeta2 * second[i] + (1 - kBeta2) * g * g);
    parameter -= static_cast<float>(lr * (first[i] / c1) / (std::sqrt(second[i] / c2) + kEps));
  }
};

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
  const std::size_t heads = n == 0 ? 0 : *std::max_element(head_of_key.begin(), head_of_key.end()) + 1;
  std::vector<bool> has_key(heads, false);
  for (std::size_t h : head_of_key) has_key[h] = true;
  for (std::size_t h : head_of_question) {
    if (h >= heads || !has_key[h]) {
      throw InputError("learn_keys: a question names head " + std::to_string(h) + ", which has no key");
    }
  }
  KeyLearningReport report;
  if (n == 0 || m == 0) return report;
  Matrix q = questions;
  normalize_rows(q, "question");
  normalize_rows(keys, "key");
  if (adapter && (adapter->rows != d || adapter->cols != d)) *adapter = Matrix(d, d);

  // Forward: adapted unit queries, softmax over every key (a head's mass is
  // the sum over its keys, i.e. its score is the log-sum-exp of its keys'),
  // cross-entropy and accuracy of the heaviest head; dL/dscore into `delta`.
  Matrix adapted, scores, delta(m, n);
  std::vector<double> z_norm(m, 1.0);
  std::vector<double> head_mass(heads);
  auto forward = [&](double& loss, double& accuracy) {
    if (adapter) {
      detail::gemm_abt(q, *adapter, adapted);
      for (std::size_t i = 0; i < q.data.size(); ++i) adapted.data[i] += q.data[i];
      for (std::size_t r = 0; r < m; ++r) {
        float* z = adapted.row(r);
        double sq = 0;
        for (std::size_t j = 0; j < d; ++j) sq += double(z[j]) * z[j];
        z_norm[r] = std::sqrt(sq);
        if (!(z_norm[r] > 0) || !std::isfinite(z_norm[r])) throw Error("learn_keys: the adapter diverged");
        for (std::size_t j = 0; j < d; ++j) z[j] = static_cast<float>(z[j] / z_norm[r]);
      }
    }
    const Matrix& unit = adapter ? adapted : q;
    detail::gemm_abt(unit, keys, scores);
    loss = 0;
    accuracy = 0;
    for (std::size_t r = 0; r < m; ++r) {
      const float* s = scores.row(r);
      float* g = delta.row(r);
      const float top = *std::max_element(s, s + n);
      double total = 0;
      std::fill(head_mass.begin(), head_mass.end(), 0.0);
      for (std::size_t i = 0; i < n; ++i) {
        const double e = std::exp(double(s[i] - top) / temperature);
        g[i] = static_cast<float>(e);
        total += e;
        head_mass[head_of_key[i]] += e;
      }
      const std::size_t y = head_of_question[r];
      const std::size_t arg = std::size_t(std::max_element(head_mass.begin(), head_mass.end()) - head_mass.begin());
      loss += std::log(total) - std::log(head_mass[y]);
      accuracy += arg == y ? 1.0 : 0.0;
      // d(-log P_y)/ds_i = P_i - [i in y] P_i / P_y
      for (std::size_t i = 0; i < n; ++i) {
        const double p = g[i] / total;
        g[i] = static_cast<float>(head_of_key[i] == y ? p - g[i] / head_mass[y] : p);
      }
    }
    loss /= double(m);
    accuracy /= double(m);
  };

  Matrix raw = keys;  // parameters; the keys are their unit rows
  Adam key_adam(n * d), adapter_adam(adapter ? d * d : 0);
  forward(report.initial_loss, report.initial_accuracy);
  Matrix grad, delta_t(n, m);
  const double scale = 1.0 / (double(temperature) * double(m));
  for (std::size_t epoch = 1; epoch <= options.epochs; ++epoch) {
    if (epoch > 1) forward(report.final_loss, report.final_accuracy);
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t i = 0; i < n; ++i) delta_t(i, r) = delta(r, i);
    const Matrix& unit = adapter ? adapted : q;
    if (adapter) {
      // dL/dq' = delta keys scale; through q' = z/|z|: (I - q'q'^T) dL/dq' / |z|; dL/dW = dZ^T q.
      Matrix dq;
      detail::gemm_ab(delta, keys, dq);
      for (std::size_t r = 0; r < m; ++r) {
        float* g = dq.row(r);
        const float* u = adapted.row(r);
        double along = 0;
        for (std::size_t j = 0; j < d; ++j) along += double(g[j]) * u[j];
        for (std::size_t j = 0; j < d; ++j) g[j] = static_cast<float>((g[j] - along * u[j]) * scale / z_norm[r]);
      }
      Matrix dq_t(d, m), dw;
      for (std::size_t r = 0; r < m; ++r)
        for (std::size_t j = 0; j < d; ++j) dq_t(j, r) = dq(r, j);
      detail::gemm_ab(dq_t, q, dw);
      for (std::size_t i = 0; i < d * d; ++i) {
        const double g = double(dw.data[i]) + double(options.adapter_decay) * adapter->data[i];
        adapter_adam.update(adapter->data[i], i, g, options.adapter_lr, epoch);
      }
    }
    // dL/du = delta^T q' scale; through u = k/|k|: (I - u u^T) dL/du / |k|.
    detail::gemm_ab(delta_t, unit, grad);
    for (std::size_t i = 0; i < n; ++i) {
      float* k = raw.row(i);
      const float* u = keys.row(i);
      const float* g = grad.row(i);
      double norm = 0, along = 0;
      for (std::size_t j = 0; j < d; ++j) norm += double(k[j]) * k[j];
      norm = std::sqrt(norm);
      for (std::size_t j = 0; j < d; ++j) along += double(g[j]) * u[j];
      for (std::size_t j = 0; j < d; ++j) {
        key_adam.update(k[j], i * d + j, (double(g[j]) - along * u[j]) * scale / norm, options.lr, epoch);
      }
    }
    keys = raw;
    normalize_rows(keys, "key");
  }
  forward(report.final_loss, report.final_accuracy);
  report.epochs = options.epochs;
  return report;
}

}  // namespace ldaproj
