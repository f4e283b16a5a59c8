// Scalar and AVX-512 versions of the streaming teacher kernel. The AVX-512
// code is compiled with function-level target attributes and chosen at run
// time, so a portable build still uses it on CPUs that have it.
#include "teacher/routing_kernels.hpp"

// GCC 12's AVX-512 intrinsic headers start from _mm512_undefined_*(), which
// its flow analysis reports as uninitialised; the values are never read.
// (Clang has no -Wmaybe-uninitialized and would reject the pragma under -Werror.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace ldaproj::detail {

void OnlineSoftmax::reset() {
  max = -std::numeric_limits<float>::infinity();
  sum = 0.0;
  std::fill(acc.begin(), acc.end(), 0.0f);
}

void OnlineSoftmax::merge(const OnlineSoftmax& other, float inv_t) {
  if (other.sum == 0.0) return;
  if (sum == 0.0) {
    *this = other;
    return;
  }
  const float top = std::max(max, other.max);
  const float mine = std::exp((max - top) * inv_t);
  const float theirs = std::exp((other.max - top) * inv_t);
  for (std::size_t j = 0; j < acc.size(); ++j) acc[j] = acc[j] * mine + other.acc[j] * theirs;
  sum = sum * mine + other.sum * theirs;
  max = top;
}

namespace {

constexpr std::size_t kBlock = 64;  // heads per step: scores of a block stay in registers/L1

// ---- scalar -------------------------------------------------------------

float row_value(const HeadRows& m, std::size_t r, std::size_t j) {
  switch (m.precision()) {
    case Precision::F32: return m.f32_row(r)[j];
    case Precision::BF16: return from_bf16(m.bf16_row(r)[j]);
    case Precision::I8: return static_cast<float>(m.i8_row(r)[j]);
  }
  return 0.0f;
}

// Brings the running state to a new maximum before adding heads above it.
void raise_max(OnlineSoftmax& st, float block_max, float inv_t) {
  if (block_max <= st.max) return;
  if (st.sum != 0.0) {
    const float scale = std::exp((st.max - block_max) * inv_t);
    for (float& v : st.acc) v *= scale;
    st.sum *= scale;
  }
  st.max = block_max;
}

void stream_scalar(const HeadRows& c, const HeadRows& a, const float* q, float inv_t, std::size_t begin,
                   std::size_t end, float* scores, OnlineSoftmax& st) {
  const std::size_t dim = c.dim();
  float s[kBlock];
  for (std::size_t b = begin; b < end; b += kBlock) {
    const std::size_t count = std::min(kBlock, end - b);
    float block_max = -std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < count; ++i) {
      float dot = 0.0f;
      for (std::size_t j = 0; j < dim; ++j) dot += q[j] * row_value(c, b + i, j);
      s[i] = dot * c.scale(b + i);
      if (scores) scores[b + i] = s[i];
      block_max = std::max(block_max, s[i]);
    }
    raise_max(st, block_max, inv_t);
    for (std::size_t i = 0; i < count; ++i) {
      const float e = std::exp((s[i] - st.max) * inv_t);
      st.sum += e;
      const float w = e * a.scale(b + i);
      for (std::size_t j = 0; j < dim; ++j) st.acc[j] += w * row_value(a, b + i, j);
    }
  }
}

double exp_scalar(float* x, std::size_t n, float shift, float inv_t) {
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = std::exp((x[i] - shift) * inv_t);
    sum += x[i];
  }
  return sum;
}

// ---- AVX-512 --------------------------------------------------------------

#define LDAPROJ_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,fma")))

// How a row format turns kStep stored values into kStep / 16 fp32 vectors.
// The vectors of one step may come out in a fixed permuted order; the query
// and the accumulator are kept in that same order while streaming.
struct F32Rows {
  using T = float;
  static constexpr std::size_t kStep = 16;
  LDAPROJ_AVX512 static void load(const T* p, __m512* v) { v[0] = _mm512_loadu_ps(p); }
};
// bf16 is the upper half of an fp32: one 64-byte load gives the even
// elements by a shift and the odd ones by a mask, with no shuffles.
struct Bf16Rows {
  using T = std::uint16_t;
  static constexpr std::size_t kStep = 32;
  LDAPROJ_AVX512 static void load(const T* p, __m512* v) {
    const __m512i x = _mm512_loadu_si512(p);
    v[0] = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
    v[1] = _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  // Position of element j within its step after load().
  static std::size_t slot(std::size_t j) { return j / 32 * 32 + (j % 2) * 16 + (j % 32) / 2; }
};
struct I8Rows {
  using T = std::int8_t;
  static constexpr std::size_t kStep = 16;
  LDAPROJ_AVX512 static void load(const T* p, __m512* v) {
    v[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
};

// exp(x) for x <= 0 (results below ~1e-45 flush to 0): 2^n * e^r with
// |r| <= ln2/2 from a two-part ln2, and a degree-6 polynomial for e^r
// (relative error about 1e-7).
LDAPROJ_AVX512 inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

LDAPROJ_AVX512 float dot_avx512(const float* a, const float* b, std::size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  std::size_t j = 0;
  for (; j + 64 <= n; j += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 16), _mm512_loadu_ps(b + j + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 32), _mm512_loadu_ps(b + j + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 48), _mm512_loadu_ps(b + j + 48), s3);
  }
  for (; j + 16 <= n; j += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j), s0);
  float tail = 0.0f;
  for (; j < n; ++j) tail += a[j] * b[j];
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3))) + tail;
}

LDAPROJ_AVX512 double exp_avx512(float* x, std::size_t n, float shift, float inv_t) {
  const __m512 vshift = _mm512_set1_ps(shift), vinv = _mm512_set1_ps(inv_t);
  __m512 total = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vshift), vinv));
    _mm512_storeu_ps(x + i, e);
    total = _mm512_add_ps(total, e);
  }
  if (i < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), vshift), vinv));
    _mm512_mask_storeu_ps(x + i, mask, e);
    total = _mm512_add_ps(total, _mm512_maskz_mov_ps(mask, e));
  }
  return static_cast<double>(_mm512_reduce_add_ps(total));
}

// The four horizontal sums of d0..d3, in one pass of shuffles.
LDAPROJ_AVX512 inline void sum4(__m512 d0, __m512 d1, __m512 d2, __m512 d3, float* out) {
  // Halve each vector into 256-bit lanes: [d0 | d1] and [d2 | d3].
  const __m512 x01 = _mm512_add_ps(_mm512_shuffle_f32x4(d0, d1, 0x44), _mm512_shuffle_f32x4(d0, d1, 0xEE));
  const __m512 x23 = _mm512_add_ps(_mm512_shuffle_f32x4(d2, d3, 0x44), _mm512_shuffle_f32x4(d2, d3, 0xEE));
  // Then into 128-bit lanes: [d0 | d1 | d2 | d3].
  __m512 y = _mm512_add_ps(_mm512_shuffle_f32x4(x01, x23, 0x88), _mm512_shuffle_f32x4(x01, x23, 0xDD));
  y = _mm512_add_ps(y, _mm512_permute_ps(y, 0x4E));
  y = _mm512_add_ps(y, _mm512_permute_ps(y, 0xB1));
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, y);
  out[0] = lanes[0];
  out[1] = lanes[4];
  out[2] = lanes[8];
  out[3] = lanes[12];
}

// Rows are streamed four at a time; asking for the lines of rows a few
// groups ahead keeps enough reads in flight to overlap memory with the
// arithmetic of the compact formats (fp32 streams fine on the hardware
// prefetcher alone).
constexpr std::size_t kPrefetchRows = 8;
template <class T>
LDAPROJ_AVX512 inline void prefetch_ahead(const T* p, std::size_t row_elems) {
  if constexpr (sizeof(T) == 4) return;
  const char* ahead = reinterpret_cast<const char*>(p + kPrefetchRows * row_elems);
  const std::size_t row_bytes = row_elems * sizeof(T);
  _mm_prefetch(ahead, _MM_HINT_T0);
  _mm_prefetch(ahead + row_bytes, _MM_HINT_T0);
  _mm_prefetch(ahead + 2 * row_bytes, _MM_HINT_T0);
  _mm_prefetch(ahead + 3 * row_bytes, _MM_HINT_T0);
}

// q and acc are in the row format's step order (see Bf16Rows::slot).
template <class Rows>
LDAPROJ_AVX512 void stream_avx512(const HeadRows& c, const HeadRows& a, const typename Rows::T* c_base,
                                  const typename Rows::T* a_base, const float* q, float inv_t,
                                  std::size_t begin, std::size_t end, float* scores, OnlineSoftmax& st,
                                  float* acc) {
  using T = typename Rows::T;
  constexpr std::size_t kVecs = Rows::kStep / 16;
  const std::size_t dim = c.dim();
  const bool c_scaled = c.precision() == Precision::I8, a_scaled = a.precision() == Precision::I8;
  alignas(64) float s[kBlock];
  for (std::size_t b = begin; b < end; b += kBlock) {
    const std::size_t count = std::min(kBlock, end - b);
    // Scores, four heads at a time so each query load serves four rows.
    std::size_t i = 0;
    for (; i + 4 <= count; i += 4) {
      const T* r0 = c_base + (b + i) * dim;
      __m512 d[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (std::size_t j = 0; j < dim; j += Rows::kStep) {
        prefetch_ahead(r0 + j, dim);
        __m512 v[4][kVecs];
#pragma GCC unroll 4
        for (std::size_t k = 0; k < 4; ++k) Rows::load(r0 + k * dim + j, v[k]);
#pragma GCC unroll 2
        for (std::size_t u = 0; u < kVecs; ++u) {
          const __m512 qv = _mm512_loadu_ps(q + j + 16 * u);
#pragma GCC unroll 4
          for (std::size_t k = 0; k < 4; ++k) d[k] = _mm512_fmadd_ps(v[k][u], qv, d[k]);
        }
      }
      sum4(d[0], d[1], d[2], d[3], s + i);
    }
    for (; i < count; ++i) {
      const T* r = c_base + (b + i) * dim;
      __m512 dot = _mm512_setzero_ps();
      for (std::size_t j = 0; j < dim; j += Rows::kStep) {
        __m512 v[kVecs];
        Rows::load(r + j, v);
        for (std::size_t u = 0; u < kVecs; ++u) dot = _mm512_fmadd_ps(v[u], _mm512_loadu_ps(q + j + 16 * u), dot);
      }
      s[i] = _mm512_reduce_add_ps(dot);
    }
    float block_max = -std::numeric_limits<float>::infinity();
    for (i = 0; i < count; ++i) {
      if (c_scaled) s[i] *= c.scale(b + i);
      if (scores) scores[b + i] = s[i];
      block_max = std::max(block_max, s[i]);
    }
    if (block_max > st.max) {
      if (st.sum != 0.0) {
        const float scale = std::exp((st.max - block_max) * inv_t);
        for (std::size_t j = 0; j < dim; ++j) acc[j] *= scale;
        st.sum *= scale;
      }
      st.max = block_max;
    }
    st.sum += exp_avx512(s, count, st.max, inv_t);
    if (a_scaled) {
      for (i = 0; i < count; ++i) s[i] *= a.scale(b + i);
    }
    // Weighted sum of answers, four rows per pass over the accumulator.
    i = 0;
    for (; i + 4 <= count; i += 4) {
      const T* r0 = a_base + (b + i) * dim;
      const __m512 w[4] = {_mm512_set1_ps(s[i]), _mm512_set1_ps(s[i + 1]), _mm512_set1_ps(s[i + 2]),
                           _mm512_set1_ps(s[i + 3])};
      for (std::size_t j = 0; j < dim; j += Rows::kStep) {
        prefetch_ahead(r0 + j, dim);
        __m512 v[4][kVecs];
#pragma GCC unroll 4
        for (std::size_t k = 0; k < 4; ++k) Rows::load(r0 + k * dim + j, v[k]);
#pragma GCC unroll 2
        for (std::size_t u = 0; u < kVecs; ++u) {
          __m512 sum = _mm512_loadu_ps(acc + j + 16 * u);
#pragma GCC unroll 4
          for (std::size_t k = 0; k < 4; ++k) sum = _mm512_fmadd_ps(w[k], v[k][u], sum);
          _mm512_storeu_ps(acc + j + 16 * u, sum);
        }
      }
    }
    for (; i < count; ++i) {
      const T* r = a_base + (b + i) * dim;
      const __m512 w = _mm512_set1_ps(s[i]);
      for (std::size_t j = 0; j < dim; j += Rows::kStep) {
        __m512 v[kVecs];
        Rows::load(r + j, v);
        for (std::size_t u = 0; u < kVecs; ++u) {
          _mm512_storeu_ps(acc + j + 16 * u, _mm512_fmadd_ps(w, v[u], _mm512_loadu_ps(acc + j + 16 * u)));
        }
      }
    }
  }
}

bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512dq");
  return has;
}

}  // namespace

Isa best_isa(std::size_t dim) {
  return cpu_has_avx512() && dim % 16 == 0 && dim > 0 ? Isa::Avx512 : Isa::Scalar;
}

void stream_heads(Isa isa, const HeadRows& c, const HeadRows& a, const float* q, float inv_t,
                  std::size_t begin, std::size_t end, float* scores, OnlineSoftmax& st) {
  if (begin >= end) return;
  const std::size_t dim = c.dim();
  const bool vector_ok = isa == Isa::Avx512 && c.precision() == a.precision() &&
                         dim % (c.precision() == Precision::BF16 ? 32 : 16) == 0;
  if (!vector_ok) {
    stream_scalar(c, a, q, inv_t, begin, end, scores, st);
    return;
  }
  switch (c.precision()) {
    case Precision::F32:
      stream_avx512<F32Rows>(c, a, c.f32_row(0), a.f32_row(0), q, inv_t, begin, end, scores, st, st.acc.data());
      break;
    case Precision::I8:
      stream_avx512<I8Rows>(c, a, c.i8_row(0), a.i8_row(0), q, inv_t, begin, end, scores, st, st.acc.data());
      break;
    case Precision::BF16: {
      // The kernel sees query and accumulator in the order its loads produce.
      std::vector<float> q_perm(dim), acc_perm(dim);
      for (std::size_t j = 0; j < dim; ++j) {
        q_perm[Bf16Rows::slot(j)] = q[j];
        acc_perm[Bf16Rows::slot(j)] = st.acc[j];
      }
      stream_avx512<Bf16Rows>(c, a, c.bf16_row(0), a.bf16_row(0), q_perm.data(), inv_t, begin, end, scores, st,
                              acc_perm.data());
      for (std::size_t j = 0; j < dim; ++j) st.acc[j] = acc_perm[Bf16Rows::slot(j)];
      break;
    }
  }
}

float dot(Isa isa, const float* a, const float* b, std::size_t n) {
  if (isa == Isa::Avx512) return dot_avx512(a, b, n);
  float s = 0.0f;
  for (std::size_t j = 0; j < n; ++j) s += a[j] * b[j];
  return s;
}

double exp_shifted(Isa isa, float* x, std::size_t n, float shift, float inv_t) {
  return isa == Isa::Avx512 ? exp_avx512(x, n, shift, inv_t) : exp_scalar(x, n, shift, inv_t);
}

}  // namespace ldaproj::detail
