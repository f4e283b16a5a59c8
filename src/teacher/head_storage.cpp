// Packing head matrices into the kernels' storage precisions.
#include "teacher/head_storage.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include <sys/mman.h>

namespace ldaproj::detail {

std::uint16_t to_bf16(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  // Inputs are finite (checked when the projection is built), so rounding
  // cannot turn a NaN into an infinity.
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

namespace {
std::size_t element_size(Precision p) {
  switch (p) {
    case Precision::F32: return 4;
    case Precision::BF16: return 2;
    case Precision::I8: return 1;
  }
  return 4;
}
}  // namespace

HeadRows::HeadRows(const Matrix& m, Precision precision)
    : precision_(precision), rows_(m.rows), dim_(m.cols) {
  // Large head sets go on 2 MiB pages where the kernel allows it: streaming
  // hundreds of MB through 4 KiB pages costs a page walk every 4 KiB.
  constexpr std::size_t kHugePage = std::size_t(2) << 20;
  const std::size_t payload = rows_ * dim_ * element_size(precision);
  const std::size_t alignment = payload >= 4 * kHugePage ? kHugePage : 64;
  const std::size_t bytes = std::max<std::size_t>(alignment, (payload + alignment - 1) / alignment * alignment);
  void* raw = std::aligned_alloc(alignment, bytes);
  if (raw && alignment == kHugePage) madvise(raw, bytes, MADV_HUGEPAGE);  // a hint; failure is harmless
  if (!raw) throw std::bad_alloc();
  data_ = std::shared_ptr<const void>(raw, [](const void* p) { std::free(const_cast<void*>(p)); });
  switch (precision) {
    case Precision::F32:
      if (!m.data.empty()) std::memcpy(raw, m.data.data(), m.data.size() * sizeof(float));
      break;
    case Precision::BF16: {
      auto* out = static_cast<std::uint16_t*>(raw);
      for (std::size_t i = 0; i < m.data.size(); ++i) out[i] = to_bf16(m.data[i]);
      break;
    }
    case Precision::I8: {
      auto* out = static_cast<std::int8_t*>(raw);
      scales_.resize(rows_);
      for (std::size_t r = 0; r < rows_; ++r) {
        const float* in = m.row(r);
        float peak = 0.0f;
        for (std::size_t j = 0; j < dim_; ++j) peak = std::max(peak, std::fabs(in[j]));
        const float scale = peak > 0.0f ? peak / 127.0f : 1.0f;
        scales_[r] = scale;
        for (std::size_t j = 0; j < dim_; ++j) {
          const float q = std::nearbyint(in[j] / scale);
          out[r * dim_ + j] = static_cast<std::int8_t>(std::clamp(q, -127.0f, 127.0f));
        }
      }
      break;
    }
  }
}

std::size_t HeadRows::bytes() const {
  return rows_ * dim_ * element_size(precision_) + scales_.size() * sizeof(float);
}

void HeadRows::unpack(std::size_t begin, std::size_t end, float* out) const {
  for (std::size_t r = begin; r < end; ++r, out += dim_) {
    switch (precision_) {
      case Precision::F32:
        std::memcpy(out, f32_row(r), dim_ * sizeof(float));
        break;
      case Precision::BF16: {
        const std::uint16_t* in = bf16_row(r);
        for (std::size_t j = 0; j < dim_; ++j) out[j] = from_bf16(in[j]);
        break;
      }
      case Precision::I8: {
        const std::int8_t* in = i8_row(r);
        const float s = scales_[r];
        for (std::size_t j = 0; j < dim_; ++j) out[j] = static_cast<float>(in[j]) * s;
        break;
      }
    }
  }
}

Matrix HeadRows::unpack() const {
  Matrix m(rows_, dim_);
  unpack(0, rows_, m.data.data());
  return m;
}

}  // namespace ldaproj::detail
