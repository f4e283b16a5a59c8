// How the teacher keeps its head matrices (centroids, answer embeddings) for
// the kernels: contiguous, row-major, 64-byte aligned, in fp32, bf16 or int8
// with one scale per row.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ldaproj/matrix.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj::detail {

class HeadRows {
 public:
  HeadRows() = default;
  HeadRows(const Matrix& rows, Precision precision);

  Precision precision() const { return precision_; }
  std::size_t rows() const { return rows_; }
  std::size_t dim() const { return dim_; }
  // Bytes the kernels read for one full pass (values plus row scales).
  std::size_t bytes() const;

  const float* f32_row(std::size_t i) const { return static_cast<const float*>(data_.get()) + i * dim_; }
  const std::uint16_t* bf16_row(std::size_t i) const {
    return static_cast<const std::uint16_t*>(data_.get()) + i * dim_;
  }
  const std::int8_t* i8_row(std::size_t i) const { return static_cast<const std::int8_t*>(data_.get()) + i * dim_; }
  float scale(std::size_t i) const { return scales_.empty() ? 1.0f : scales_[i]; }

  // Rows [begin, end) as fp32 into `out` ((end - begin) x dim).
  void unpack(std::size_t begin, std::size_t end, float* out) const;
  Matrix unpack() const;

 private:
  Precision precision_ = Precision::F32;
  std::size_t rows_ = 0;
  std::size_t dim_ = 0;
  // Immutable once packed, so copies of a projection share it.
  std::shared_ptr<const void> data_;
  std::vector<float> scales_;  // int8 only
};

// Round-to-nearest-even fp32 -> bf16 and back.
std::uint16_t to_bf16(float value);
inline float from_bf16(std::uint16_t bits) {
  const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float out;
  __builtin_memcpy(&out, &wide, sizeof(out));
  return out;
}

}  // namespace ldaproj::detail
