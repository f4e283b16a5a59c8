// A dense row-major float matrix: the currency of every batch API.
#pragma once
#include <cstddef>
#include <span>
#include <vector>

namespace ldaproj {

// One row per item (query, head, answer), `cols` floats per row, contiguous.
struct Matrix {
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::vector<float> data;

  Matrix() = default;
  Matrix(std::size_t r, std::size_t c) : rows(r), cols(c), data(r * c, 0.0f) {}

  float* row(std::size_t i) { return data.data() + i * cols; }
  const float* row(std::size_t i) const { return data.data() + i * cols; }
  std::span<float> row_span(std::size_t i) { return {row(i), cols}; }
  std::span<const float> row_span(std::size_t i) const { return {row(i), cols}; }
  float& operator()(std::size_t i, std::size_t j) { return data[i * cols + j]; }
  float operator()(std::size_t i, std::size_t j) const { return data[i * cols + j]; }
  bool empty() const { return rows == 0; }
};

}  // namespace ldaproj
