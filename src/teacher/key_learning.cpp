// Discriminative keys: moves each head's key (its unit centroid) so that the
// teacher's routing softmax puts each training question on its own cluster's
// head (cross-entropy, full-batch Adam on the sphere). The centroid is where
// it starts; the values (answers) are untouched.
#include <cmath>

#include "common/gemm.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

KeyLearningReport learn_keys(Matrix& keys, const Matrix& questions, const std::vector<std::size_t>& head_of_question,
                             float temperature, const KeyLearningOptions& options) {
  const std::size_t n = keys.rows, d = keys.cols, m = questions.rows;
  if (questions.cols != d || head_of_question.size() != m) {
    throw InputError("learn_keys: questions and their heads do not match the keys");
  }
  if (!(temperature > 0.0f) || !(options.lr > 0.0f)) throw InputError("learn_keys: temperature and lr must be > 0");
  for (std::size_t h : head_of_question) {
    if (h >= n) throw InputError("learn_keys: a question names head " + std::to_string(h) + " of " + std::to_string(n));
  }
  KeyLearningReport report;
  if (n == 0 || m == 0) return report;
  Matrix q = questions;
  normalize_rows(q, "question");
  normalize_rows(keys, "key");

  // Cross-entropy of softmax(u_i . q / t) and accuracy; probabilities - one-hot into `delta`.
  Matrix scores, delta(m, n);
  auto forward = [&](const Matrix& unit_keys, double& loss, double& accuracy) {
    detail::gemm_abt(q, unit_keys, scores);
    loss = 0;
    accuracy = 0;
    for (std::size_t r = 0; r < m; ++r) {
      float* s = scores.row(r);
      float* g = delta.row(r);
      std::size_t arg = 0;
      for (std::size_t i = 1; i < n; ++i)
        if (s[i] > s[arg]) arg = i;
      double total = 0;
      for (std::size_t i = 0; i < n; ++i) total += std::exp(double(s[i] - s[arg]) / temperature);
      const std::size_t y = head_of_question[r];
      loss += std::log(total) - double(s[y] - s[arg]) / temperature;
      accuracy += arg == y ? 1.0 : 0.0;
      for (std::size_t i = 0; i < n; ++i) {
        g[i] = static_cast<float>(std::exp(double(s[i] - s[arg]) / temperature) / total);
      }
      g[y] -= 1.0f;
    }
    loss /= double(m);
    accuracy /= double(m);
  };

  Matrix raw = keys;  // parameters; the keys are their unit rows
  std::vector<float> first(n * d, 0.0f), second(n * d, 0.0f);
  const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  forward(keys, report.initial_loss, report.initial_accuracy);
  Matrix grad;
  for (std::size_t epoch = 1; epoch <= options.epochs; ++epoch) {
    if (epoch > 1) forward(keys, report.final_loss, report.final_accuracy);
    // dL/du = delta^T q / (t m); through u = k/|k|: (I - u u^T) dL/du / |k|.
    Matrix delta_t(n, m);
    for (std::size_t r = 0; r < m; ++r)
      for (std::size_t i = 0; i < n; ++i) delta_t(i, r) = delta(r, i);
    detail::gemm_ab(delta_t, q, grad);
    const double scale = 1.0 / (double(temperature) * double(m));
    const double correction1 = 1.0 - std::pow(beta1, double(epoch)), correction2 = 1.0 - std::pow(beta2, double(epoch));
    for (std::size_t i = 0; i < n; ++i) {
      float* k = raw.row(i);
      const float* u = keys.row(i);
      float* g = grad.row(i);
      double norm = 0, along = 0;
      for (std::size_t j = 0; j < d; ++j) norm += double(k[j]) * k[j];
      norm = std::sqrt(norm);
      for (std::size_t j = 0; j < d; ++j) along += double(g[j]) * u[j];
      for (std::size_t j = 0; j < d; ++j) {
        const double gj = (double(g[j]) - along * u[j]) * scale / norm;
        float& m1 = first[i * d + j];
        float& m2 = second[i * d + j];
        m1 = static_cast<float>(beta1 * m1 + (1 - beta1) * gj);
        m2 = static_cast<float>(beta2 * m2 + (1 - beta2) * gj * gj);
        k[j] -= static_cast<float>(options.lr * (m1 / correction1) / (std::sqrt(m2 / correction2) + eps));
      }
    }
    keys = raw;
    normalize_rows(keys, "key");
  }
  forward(keys, report.final_loss, report.final_accuracy);
  report.epochs = options.epochs;
  return report;
}

}  // namespace ldaproj
