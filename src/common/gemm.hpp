// Thin row-major wrappers over OpenBLAS sgemm shared by the numeric kernels.
#pragma once
#include <cblas.h>

#include "ldaproj/matrix.hpp"

namespace ldaproj::detail {

// out = a * b^T   (a: m x k, b: n x k, out: m x n)
inline void gemm_abt(const Matrix& a, const Matrix& b, Matrix& out) {
  out = Matrix(a.rows, b.rows);
  if (a.rows == 0 || b.rows == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(a.rows),
              static_cast<int>(b.rows), static_cast<int>(a.cols), 1.0f, a.data.data(),
              static_cast<int>(a.cols), b.data.data(), static_cast<int>(b.cols), 0.0f,
              out.data.data(), static_cast<int>(out.cols));
}

// out = a * b   (a: m x k, b: k x n, out: m x n)
inline void gemm_ab(const Matrix& a, const Matrix& b, Matrix& out) {
  out = Matrix(a.rows, b.cols);
  if (a.rows == 0 || b.cols == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(a.rows),
              static_cast<int>(b.cols), static_cast<int>(a.cols), 1.0f, a.data.data(),
              static_cast<int>(a.cols), b.data.data(), static_cast<int>(b.cols), 0.0f,
              out.data.data(), static_cast<int>(out.cols));
}

}  // namespace ldaproj::detail
