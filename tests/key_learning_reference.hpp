// The full-batch key learning as first written (every question against every
// key in one scores matrix, one Adam step per epoch): the reference that the
// bounded-memory learn_keys is checked against. Test-only.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/gemm.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj::testing_support {

namespace reference_detail {
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

}  // namespace reference_detail

inline KeyLearningReport reference_learn_keys(Matrix& keys, const std::vector<std::size_t>& head_of_key, Matrix* adapter,
                             const Matrix& questions, const std::vector<std::size_t>& head_of_question,
                             float temperature, const KeyLearningOptions& options) {
  using ldaproj::detail::gemm_ab;
  using ldaproj::detail::gemm_abt;
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
      gemm_abt(q, *adapter, adapted);
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
    gemm_abt(unit, keys, scores);
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
  reference_detail::Adam key_adam(n * d), adapter_adam(adapter ? d * d : 0);
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
      gemm_ab(delta, keys, dq);
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
      gemm_ab(dq_t, q, dw);
      for (std::size_t i = 0; i < d * d; ++i) {
        const double g = double(dw.data[i]) + double(options.adapter_decay) * adapter->data[i];
        adapter_adam.update(adapter->data[i], i, g, options.adapter_lr, epoch);
      }
    }
    // dL/du = delta^T q' scale; through u = k/|k|: (I - u u^T) dL/du / |k|.
    gemm_ab(delta_t, unit, grad);
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

}  // namespace ldaproj::testing_support
