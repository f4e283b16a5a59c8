// The global-W baseline: one regularised least-squares map from the question
// space to the answer space, fitted on head centroids and question residuals.
// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 intrinsics when
// Eigen's packet code is inlined here (a known false positive of the
// `__Y = __Y` idiom); it is not about this file's variables.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <Eigen/Dense>
#include <algorithm>
#include <string>

#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Eigen::Map<const RowMajor> view(const Matrix& m) {
  return {m.data.data(), static_cast<Eigen::Index>(m.rows), static_cast<Eigen::Index>(m.cols)};
}

}  // namespace

GlobalProjection GlobalProjection::fit(const Matrix& centroids, const Matrix& answers,
                                       const Matrix& residuals, double lambda, double mu) {
  if (centroids.rows == 0 || centroids.rows != answers.rows || centroids.cols != answers.cols) {
    throw InputError("global-w: need matching, non-empty centroid and answer matrices");
  }
  if (residuals.rows > 0 && residuals.cols != centroids.cols) {
    throw InputError("global-w: residuals have dimension " + std::to_string(residuals.cols) +
                     ", expected " + std::to_string(centroids.cols));
  }
  const auto d = static_cast<Eigen::Index>(centroids.cols);
  // Rows here are vectors, so Q^T Q in row form equals Q Q^T in column form.
  const Eigen::MatrixXd q = view(centroids).cast<double>();
  const Eigen::MatrixXd a = view(answers).cast<double>();
  Eigen::MatrixXd gram = q.transpose() * q;
  // The residuals' Gram in blocks: a double copy of 274k residuals would be
  // 0.8 GB for what ends as a d x d sum.
  constexpr std::size_t kBlock = 8192;
  for (std::size_t begin = 0; begin < residuals.rows; begin += kBlock) {
    const auto rows = static_cast<Eigen::Index>(std::min(kBlock, residuals.rows - begin));
    const Eigen::MatrixXd r =
        Eigen::Map<const RowMajor>(residuals.row(begin), rows, d).cast<double>();
    gram.noalias() += lambda * (r.transpose() * r);
  }
  gram += mu * Eigen::MatrixXd::Identity(d, d);
  // Symmetric PSD: a pseudo-inverse through the eigendecomposition drops
  // directions with no data instead of amplifying noise along them.
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(gram);
  const Eigen::VectorXd& values = eig.eigenvalues();
  const double cutoff = values.cwiseAbs().maxCoeff() * 1e-12 * static_cast<double>(d);
  Eigen::VectorXd inv = values.unaryExpr([cutoff](double v) { return v > cutoff ? 1.0 / v : 0.0; });
  const Eigen::MatrixXd pinv = eig.eigenvectors() * inv.asDiagonal() * eig.eigenvectors().transpose();
  const Eigen::MatrixXd w = a.transpose() * q * pinv;  // d x d, maps column q to column p

  GlobalProjection out;
  out.w_ = Matrix(static_cast<std::size_t>(d), static_cast<std::size_t>(d));
  Eigen::Map<RowMajor>(out.w_.data.data(), d, d) = w.cast<float>();
  return out;
}

Matrix GlobalProjection::project(const Matrix& queries) const {
  if (w_.rows == 0) throw Error("global-w projection used before fit()");
  if (queries.cols != w_.cols) {
    throw InputError("query embeddings have dimension " + std::to_string(queries.cols) +
                     ", global-w expects " + std::to_string(w_.cols));
  }
  Matrix q = queries;
  normalize_rows(q, "query");
  Matrix out(queries.rows, w_.rows);
  Eigen::Map<RowMajor>(out.data.data(), static_cast<Eigen::Index>(out.rows),
                       static_cast<Eigen::Index>(out.cols)) =
      view(q) * view(w_).transpose();
  normalize_rows(out, "global-w projected query");
  return out;
}

}  // namespace ldaproj
