// Packed fully connected layers for the encoder. Every format keeps W^T in
// panels of 16 output columns, k-major inside a panel, so one kernel tile
// (up to 8 rows x 3 panels) reads each weight once from a few sequential
// streams and keeps its 24 accumulators in registers. bf16 interleaves pairs
// of k (the layout of vdpbf16ps), int8 groups of four (vpdpbusd).
#include "embed/encoder_kernels.hpp"

// GCC 12's AVX-512 intrinsic headers start from _mm512_undefined_*(), which
// its flow analysis reports as uninitialised; the values are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "common/parallel.hpp"

namespace ldaproj::detail {

namespace {

constexpr std::size_t kPanel = PackedLinear::kPanel;
constexpr std::size_t kTileRows = 8;
constexpr std::size_t kTilePanels = 3;

std::size_t k_group(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32: return 1;
    case WeightFormat::BF16: return 2;
    case WeightFormat::I8: return 4;
  }
  return 1;
}

// Activations in the form the kernels read: fp32 rows as given, bf16 pairs
// packed into 32-bit words, or int8 + 128 (unsigned) in 32-bit groups of four
// with one scale per block of kInt8ActivationBlock values. Reused across calls
// of one thread.
struct Activations {
  const float* f32 = nullptr;
  std::vector<std::uint32_t> words;
  std::vector<float> block_scale;  // [row][block]
  std::size_t blocks = 0;          // per row
  std::size_t stride = 0;          // elements of f32, or words per row
};

std::size_t k_padding(WeightFormat f) { return f == WeightFormat::I8 ? kInt8ActivationBlock : k_group(f); }

void prepare_scalar(WeightFormat format, const float* x, std::size_t rows, std::size_t in, std::size_t k_padded,
                    Activations& a) {
  if (format == WeightFormat::F32) {
    a.f32 = x;
    a.stride = in;
    return;
  }
  const std::size_t group = k_group(format);
  a.stride = k_padded / group;
  a.words.assign(rows * a.stride, 0u);
  if (format == WeightFormat::BF16) {
    for (std::size_t r = 0; r < rows; ++r) {
      const float* src = x + r * in;
      std::uint32_t* dst = a.words.data() + r * a.stride;
      for (std::size_t k = 0; k < in; ++k) {
        dst[k / 2] |= static_cast<std::uint32_t>(round_to_bf16(src[k])) << (16 * (k % 2));
      }
    }
    return;
  }
  a.blocks = k_padded / kInt8ActivationBlock;
  a.block_scale.resize(rows * a.blocks);
  std::vector<std::int8_t> q(k_padded);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t b = 0; b < a.blocks; ++b) {
      const std::size_t first = b * kInt8ActivationBlock;
      const std::size_t n = first < in ? std::min(kInt8ActivationBlock, in - first) : 0;
      a.block_scale[r * a.blocks + b] = quantize_row_i8(x + r * in + first, n, q.data() + first);
    }
    std::uint32_t* dst = a.words.data() + r * a.stride;
    for (std::size_t k = 0; k < k_padded; ++k) {
      const auto shifted = static_cast<std::uint32_t>((k < in ? q[k] : 0) + 128);
      dst[k / 4] |= shifted << (8 * (k % 4));
    }
  }
}

// Everything a tile needs besides its row/panel range.
struct TileArgs {
  const PackedLinear* layer;
  const Activations* act;
  const float* bias;
  const float* column_scale;       // int8: [k block][column]
  const std::int32_t* column_sum;  // [k block][column]
  std::size_t columns;             // padded: panels * 16
  const void* weights;        // start of panel 0
  std::size_t panel_stride;   // elements (f32 / uint16 / int8) per panel
  std::size_t k_steps;        // k, k pairs or k quads
  float* y;
  std::size_t out;
};

// ---- scalar ---------------------------------------------------------------

void tile_scalar(WeightFormat format, const TileArgs& t, std::size_t row0, std::size_t rows, std::size_t panel0,
                 std::size_t panels) {
  float acc[kPanel];
  for (std::size_t r = row0; r < row0 + rows; ++r) {
    for (std::size_t p = panel0; p < panel0 + panels; ++p) {
      switch (format) {
        case WeightFormat::F32: {
          const float* w = static_cast<const float*>(t.weights) + p * t.panel_stride;
          const float* x = t.act->f32 + r * t.act->stride;
          std::copy_n(t.bias + p * kPanel, kPanel, acc);
          for (std::size_t k = 0; k < t.k_steps; ++k) {
            for (std::size_t j = 0; j < kPanel; ++j) acc[j] += x[k] * w[k * kPanel + j];
          }
          break;
        }
        case WeightFormat::BF16: {
          // Same order as vdpbf16ps: the odd element of a pair, then the even.
          const auto* w = static_cast<const std::uint16_t*>(t.weights) + p * t.panel_stride;
          const std::uint32_t* x = t.act->words.data() + r * t.act->stride;
          std::copy_n(t.bias + p * kPanel, kPanel, acc);
          for (std::size_t k = 0; k < t.k_steps; ++k) {
            const float x0 = bf16_to_float(static_cast<std::uint16_t>(x[k] & 0xffffu));
            const float x1 = bf16_to_float(static_cast<std::uint16_t>(x[k] >> 16));
            for (std::size_t j = 0; j < kPanel; ++j) {
              acc[j] += x1 * bf16_to_float(w[(k * kPanel + j) * 2 + 1]);
              acc[j] += x0 * bf16_to_float(w[(k * kPanel + j) * 2]);
            }
          }
          break;
        }
        case WeightFormat::I8: {
          const auto* w = static_cast<const std::int8_t*>(t.weights) + p * t.panel_stride;
          const std::uint32_t* x = t.act->words.data() + r * t.act->stride;
          constexpr std::size_t quads = kInt8ActivationBlock / 4;
          std::fill_n(acc, kPanel, 0.0f);
          for (std::size_t blk = 0; blk < t.act->blocks; ++blk) {
            std::int32_t sum[kPanel] = {};
            for (std::size_t k = blk * quads; k < (blk + 1) * quads; ++k) {
              for (std::size_t j = 0; j < kPanel; ++j) {
                for (std::size_t b = 0; b < 4; ++b) {
                  const auto xv = static_cast<std::int32_t>((x[k] >> (8 * b)) & 0xffu);
                  sum[j] += xv * w[(k * kPanel + j) * 4 + b];
                }
              }
            }
            const float scale = t.act->block_scale[r * t.act->blocks + blk];
            for (std::size_t j = 0; j < kPanel; ++j) {
              const std::size_t at = blk * t.columns + p * kPanel + j;
              const std::int32_t offset = 128 * t.column_sum[at];
              acc[j] += static_cast<float>(sum[j] - offset) * (scale * t.column_scale[at]);
            }
          }
          for (std::size_t j = 0; j < kPanel; ++j) acc[j] += t.bias[p * kPanel + j];
          break;
        }
      }
      const std::size_t first = p * kPanel;
      const std::size_t valid = std::min(kPanel, t.out - first);
      std::copy_n(acc, valid, t.y + r * t.out + first);
    }
  }
}

// ---- AVX-512 --------------------------------------------------------------

#define LDAPROJ_AVX512_F32 __attribute__((target("avx512f,avx512bw,avx512dq,fma")))
#define LDAPROJ_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,fma,avx512bf16")))
#define LDAPROJ_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,fma,avx512vnni")))

LDAPROJ_AVX512_F32 inline __mmask16 column_mask(const TileArgs& t, std::size_t panel) {
  const std::size_t first = panel * kPanel;
  const std::size_t valid = std::min(kPanel, t.out - first);
  return static_cast<__mmask16>((1u << valid) - 1u);
}

template <int MR, int NP>
LDAPROJ_AVX512_F32 void tile_f32(const TileArgs& t, std::size_t row0, std::size_t panel0) {
  const float* w = static_cast<const float*>(t.weights) + panel0 * t.panel_stride;
  const float* x = t.act->f32 + row0 * t.act->stride;
  const std::size_t ldx = t.act->stride, ps = t.panel_stride;
  __m512 acc[MR][NP];
#pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) {
    const __m512 b = _mm512_loadu_ps(t.bias + (panel0 + p) * kPanel);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) acc[r][p] = b;
  }
  for (std::size_t k = 0; k < t.k_steps; ++k) {
    __m512 wv[NP];
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      _mm_prefetch(reinterpret_cast<const char*>(w + p * ps + (k + 16) * kPanel), _MM_HINT_T0);
      wv[p] = _mm512_loadu_ps(w + p * ps + k * kPanel);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * ldx + k]);
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_fmadd_ps(a, wv[p], acc[r][p]);
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) {
    const __mmask16 m = column_mask(t, panel0 + p);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(t.y + (row0 + r) * t.out + (panel0 + p) * kPanel, m, acc[r][p]);
  }
}

template <int MR, int NP>
LDAPROJ_AVX512_BF16 void tile_bf16(const TileArgs& t, std::size_t row0, std::size_t panel0) {
  const auto* w = static_cast<const std::uint16_t*>(t.weights) + panel0 * t.panel_stride;
  const std::uint32_t* x = t.act->words.data() + row0 * t.act->stride;
  const std::size_t ldx = t.act->stride, ps = t.panel_stride;
  __m512 acc[MR][NP];
#pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) {
    const __m512 b = _mm512_loadu_ps(t.bias + (panel0 + p) * kPanel);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) acc[r][p] = b;
  }
  for (std::size_t k = 0; k < t.k_steps; ++k) {
    __m512bh wv[NP];
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      _mm_prefetch(reinterpret_cast<const char*>(w + p * ps + (k + 16) * 2 * kPanel), _MM_HINT_T0);
      wv[p] = (__m512bh)_mm512_loadu_si512(w + p * ps + k * 2 * kPanel);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(x[r * ldx + k]));
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], a, wv[p]);
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) {
    const __mmask16 m = column_mask(t, panel0 + p);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(t.y + (row0 + r) * t.out + (panel0 + p) * kPanel, m, acc[r][p]);
  }
}

// At most 4 rows: integer and float accumulators both stay in registers.
template <int MR, int NP>
LDAPROJ_AVX512_VNNI void tile_i8(const TileArgs& t, std::size_t row0, std::size_t panel0) {
  constexpr std::size_t quads = kInt8ActivationBlock / 4;
  const auto* w = static_cast<const std::int8_t*>(t.weights) + panel0 * t.panel_stride;
  const std::uint32_t* x = t.act->words.data() + row0 * t.act->stride;
  const std::size_t ldx = t.act->stride, ps = t.panel_stride, blocks = t.act->blocks;
  const float* block_scale = t.act->block_scale.data() + row0 * blocks;
  __m512 acc[MR][NP];
#pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) acc[r][p] = _mm512_setzero_ps();
  }
  for (std::size_t blk = 0; blk < blocks; ++blk) {
    __m512i dot[MR][NP];
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) dot[r][p] = _mm512_setzero_si512();
    }
    for (std::size_t k = blk * quads; k < (blk + 1) * quads; ++k) {
      __m512i wv[NP];
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) {
        _mm_prefetch(reinterpret_cast<const char*>(w + p * ps + (k + 16) * 4 * kPanel), _MM_HINT_T0);
        wv[p] = _mm512_loadu_si512(w + p * ps + k * 4 * kPanel);
      }
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m512i a = _mm512_set1_epi32(static_cast<int>(x[r * ldx + k]));
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p) dot[r][p] = _mm512_dpbusd_epi32(dot[r][p], a, wv[p]);
      }
    }
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      const std::size_t at = blk * t.columns + (panel0 + p) * kPanel;
      const __m512i offset = _mm512_slli_epi32(_mm512_loadu_si512(t.column_sum + at), 7);
      const __m512 weight_scale = _mm512_loadu_ps(t.column_scale + at);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m512 d = _mm512_cvtepi32_ps(_mm512_sub_epi32(dot[r][p], offset));
        const __m512 s = _mm512_mul_ps(weight_scale, _mm512_set1_ps(block_scale[r * blocks + blk]));
        acc[r][p] = _mm512_fmadd_ps(d, s, acc[r][p]);
      }
    }
  }
#pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) {
    const std::size_t c = (panel0 + p) * kPanel;
    const __mmask16 m = column_mask(t, panel0 + p);
    const __m512 bias = _mm512_loadu_ps(t.bias + c);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(t.y + (row0 + r) * t.out + c, m, _mm512_add_ps(acc[r][p], bias));
  }
}

// erf on [0, 4) as a degree-7 polynomial in (t - centre) on each of eight
// intervals of width 1/2 (least-squares fits on Chebyshev nodes); kErfCoeff[j]
// holds coefficient j for the eight intervals, picked per lane by interval.
alignas(64) const float kErfCoeff[8][16] = {
    {2.763263881e-01f, 7.111556530e-01f, 9.229001403e-01f, 9.866716862e-01f, 9.985373020e-01f,
     9.998993874e-01f, 9.999957085e-01f, 9.999998808e-01f},
    {1.060014129e+00f, 6.429310441e-01f, 2.365211248e-01f, 5.277499557e-02f, 7.142319344e-03f,
     5.862772814e-04f, 2.918901191e-05f, 8.814288321e-07f},
    {-2.650029659e-01f, -4.821981490e-01f, -2.956517339e-01f, -9.235620499e-02f, -1.607015729e-02f,
     -1.612267457e-03f, -9.486933413e-05f, -3.306070994e-06f},
    {-3.091704845e-01f, 2.678835019e-02f, 1.675358862e-01f, 9.015738964e-02f, 2.172451280e-02f,
     2.760380274e-03f, 1.958126231e-04f, 7.970327715e-06f},
    {1.269345582e-01f, 1.506756246e-01f, -6.132035051e-03f, -4.810552299e-02f, -1.908825710e-02f,
     -3.257710487e-03f, -2.861694375e-04f, -1.378540946e-05f},
    {8.003626764e-02f, -5.321709067e-02f, -4.718655348e-02f, 6.618473213e-03f, 1.066005975e-02f,
     2.756291069e-03f, 3.136288724e-04f, 1.833005990e-05f},
    {-3.934079409e-02f, -2.658282965e-02f, 2.059773728e-02f, 9.049494751e-03f, -2.779565053e-03f,
     -1.667850651e-03f, -2.737584582e-04f, -2.069241236e-05f},
    {-1.580337062e-02f, 1.788549684e-02f, 3.745110473e-03f, -5.933099426e-03f, -7.215272053e-04f,
     6.358152023e-04f, 1.735962724e-04f, 1.714471910e-05f},
};

LDAPROJ_AVX512_F32 inline __m512 gelu16(__m512 x) {
  const __m512 t = _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(static_cast<float>(M_SQRT1_2))));
  const __m512 clamped = _mm512_min_ps(t, _mm512_set1_ps(3.99f));
  const __m512i interval = _mm512_cvttps_epi32(_mm512_mul_ps(clamped, _mm512_set1_ps(2.0f)));
  const __m512 centre = _mm512_fmadd_ps(_mm512_cvtepi32_ps(interval), _mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
  const __m512 u = _mm512_sub_ps(clamped, centre);
  __m512 e = _mm512_permutexvar_ps(interval, _mm512_load_ps(kErfCoeff[7]));
  for (int j = 6; j >= 0; --j) e = _mm512_fmadd_ps(e, u, _mm512_permutexvar_ps(interval, _mm512_load_ps(kErfCoeff[j])));
  // erf rounds to 1 in fp32 from t = 3.92 on; the sign of erf is the sign of x.
  e = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(t, _mm512_set1_ps(3.99f), _CMP_GE_OQ), e, _mm512_set1_ps(1.0f));
  const __m512 sign = _mm512_and_ps(x, _mm512_set1_ps(-0.0f));
  e = _mm512_or_ps(e, sign);
  const __m512 half_x = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
  return _mm512_fmadd_ps(half_x, e, half_x);
}

LDAPROJ_AVX512_F32 void gelu_avx512(float* x, std::size_t n) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, gelu16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(x + i, m, gelu16(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

// Activations for the vector kernels: the same values as prepare_scalar
// (round to nearest even; x * (127 / max|x|) rounded to nearest even), except
// that the bf16 conversion reads fp32 subnormals as zero.
LDAPROJ_AVX512_BF16 void to_bf16_words(const float* x, std::size_t n, std::uint32_t* words) {
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(words + i / 2, (__m512i)v);
  }
  if (i < n) {
    const std::size_t left = n - i;
    const auto lo_mask = static_cast<__mmask16>((1u << std::min<std::size_t>(left, 16)) - 1u);
    const auto hi_mask = static_cast<__mmask16>(left > 16 ? (1u << (left - 16)) - 1u : 0u);
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi_mask, x + i + 16), _mm512_maskz_loadu_ps(lo_mask, x + i));
    const auto word_mask = static_cast<__mmask16>((1u << ((left + 1) / 2)) - 1u);
    _mm512_mask_storeu_epi32(words + i / 2, word_mask, (__m512i)v);
  }
}

LDAPROJ_AVX512_F32 float to_u8_words(const float* x, std::size_t n, std::size_t k_padded, std::uint32_t* words) {
  auto tail = [&](std::size_t i) { return static_cast<__mmask16>(n - i >= 16 ? 0xffffu : (1u << (n - i)) - 1u); };
  __m512 max_abs = _mm512_setzero_ps();
  for (std::size_t i = 0; i < n; i += 16) max_abs = _mm512_max_ps(max_abs, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail(i), x + i)));
  const float top = _mm512_reduce_max_ps(max_abs);
  auto* bytes = reinterpret_cast<unsigned char*>(words);
  std::memset(bytes, 128, k_padded);
  if (top == 0.0f || !std::isfinite(top)) return 0.0f;
  const __m512 inv = _mm512_set1_ps(127.0f / top);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), offset = _mm512_set1_epi32(128);
  for (std::size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail(i);
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), offset);
    _mm512_mask_cvtepi32_storeu_epi8(bytes + i, m, q);
  }
  return top / 127.0f;
}

void prepare(WeightFormat format, bool vector, const float* x, std::size_t rows, std::size_t in, std::size_t k_padded,
             Activations& a) {
  if (!vector || format == WeightFormat::F32) {
    prepare_scalar(format, x, rows, in, k_padded, a);
    return;
  }
  a.stride = k_padded / k_group(format);
  a.words.resize(rows * a.stride);
  if (format == WeightFormat::BF16) {
    for (std::size_t r = 0; r < rows; ++r) to_bf16_words(x + r * in, in, a.words.data() + r * a.stride);
    return;
  }
  a.blocks = k_padded / kInt8ActivationBlock;
  a.block_scale.resize(rows * a.blocks);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t b = 0; b < a.blocks; ++b) {
      const std::size_t first = b * kInt8ActivationBlock;
      const std::size_t n = first < in ? std::min(kInt8ActivationBlock, in - first) : 0;
      a.block_scale[r * a.blocks + b] = to_u8_words(x + r * in + first, n, kInt8ActivationBlock,
                                                    a.words.data() + r * a.stride + first / 4);
    }
  }
}

LDAPROJ_AVX512_F32 void layer_norm_avx512(float* x, std::size_t rows, std::size_t dim, const float* gamma,
                                          const float* beta, float eps) {
  const float inv_dim = 1.0f / static_cast<float>(dim);
  for (std::size_t r = 0; r < rows; ++r) {
    float* v = x + r * dim;
    __m512 sum = _mm512_setzero_ps();
    for (std::size_t j = 0; j < dim; j += 16) sum = _mm512_add_ps(sum, _mm512_loadu_ps(v + j));
    const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(sum) * inv_dim);
    __m512 sq = _mm512_setzero_ps();
    for (std::size_t j = 0; j < dim; j += 16) {
      const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(v + j), mean);
      sq = _mm512_fmadd_ps(d, d, sq);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(sq) * inv_dim + eps));
    for (std::size_t j = 0; j < dim; j += 16) {
      const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(v + j), mean), inv);
      _mm512_storeu_ps(v + j, _mm512_fmadd_ps(d, _mm512_loadu_ps(gamma + j), _mm512_loadu_ps(beta + j)));
    }
  }
}

// exp(x) for x <= 0: x = n ln 2 + r with |r| <= ln 2 / 2 (ln 2 split in two
// so the reduction stays exact for large n), exp(r) by its Taylor series to
// degree 7 (truncation below 1e-8 relative), times 2^n.
LDAPROJ_AVX512_F32 inline __m512 exp16_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));  // exp underflows to 0 below
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606820309417e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

LDAPROJ_AVX512_F32 void softmax_avx512(float* x, std::size_t rows, std::size_t len) {
  auto mask_at = [&](std::size_t j) { return static_cast<__mmask16>(len - j >= 16 ? 0xffffu : (1u << (len - j)) - 1u); };
  const __m512 lowest = _mm512_set1_ps(-INFINITY);
  for (std::size_t r = 0; r < rows; ++r) {
    float* v = x + r * len;
    __m512 top = lowest;
    for (std::size_t j = 0; j < len; j += 16) top = _mm512_max_ps(top, _mm512_mask_loadu_ps(lowest, mask_at(j), v + j));
    const __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(top));
    __m512 sum = _mm512_setzero_ps();
    for (std::size_t j = 0; j < len; j += 16) {
      const __mmask16 m = mask_at(j);
      const __m512 e = _mm512_maskz_mov_ps(m, exp16_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, v + j), shift)));
      sum = _mm512_add_ps(sum, e);
      _mm512_mask_storeu_ps(v + j, m, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (std::size_t j = 0; j < len; j += 16) {
      const __mmask16 m = mask_at(j);
      _mm512_mask_storeu_ps(v + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, v + j), inv));
    }
  }
}

// Scores of rows [row0, row0 + MR) against every key: kt holds K transposed
// (head_dim x padded_len), so a row of scores is a sum over d of q[d] times a
// contiguous row of kt.
template <int MR>
LDAPROJ_AVX512_F32 void attention_scores(const float* q, std::size_t stride, const float* kt, std::size_t padded_len,
                                         std::size_t len, std::size_t head_dim, float scale, float* scores,
                                         std::size_t row0) {
  for (std::size_t j = 0; j < len; j += 16) {
    __m512 acc[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
    for (std::size_t d = 0; d < head_dim; ++d) {
      const __m512 kv = _mm512_load_ps(kt + d * padded_len + j);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[(row0 + r) * stride + d]), kv, acc[r]);
    }
    const auto m = static_cast<__mmask16>(len - j >= 16 ? 0xffffu : (1u << (len - j)) - 1u);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      _mm512_mask_storeu_ps(scores + (row0 + r) * len + j, m, _mm512_mul_ps(acc[r], _mm512_set1_ps(scale)));
    }
  }
}

// ctx rows [row0, row0 + MR) = probabilities times V, NV vectors of 16 per row.
template <int MR, int NV>
LDAPROJ_AVX512_F32 void attention_values(const float* probs, const float* v, std::size_t stride, std::size_t len,
                                         float* ctx, std::size_t ctx_stride, std::size_t row0) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int u = 0; u < NV; ++u) acc[r][u] = _mm512_setzero_ps();
  }
  for (std::size_t j = 0; j < len; ++j) {
    __m512 vv[NV];
#pragma GCC unroll 4
    for (int u = 0; u < NV; ++u) vv[u] = _mm512_loadu_ps(v + j * stride + 16 * u);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 p = _mm512_set1_ps(probs[(row0 + r) * len + j]);
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) acc[r][u] = _mm512_fmadd_ps(p, vv[u], acc[r][u]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int u = 0; u < NV; ++u) _mm512_storeu_ps(ctx + (row0 + r) * ctx_stride + 16 * u, acc[r][u]);
  }
}

template <int NV>
LDAPROJ_AVX512_F32 void attention_avx512(const float* q, const float* k, const float* v, std::size_t stride,
                                         std::size_t len, float scale, float* ctx, std::size_t ctx_stride,
                                         std::vector<float>& scratch) {
  constexpr std::size_t head_dim = 16 * NV;
  const std::size_t padded = (len + 15) / 16 * 16;
  // [kt: head_dim x padded, 64-byte aligned][scores: len x len]
  scratch.resize(head_dim * padded + len * len + 16);
  float* kt = scratch.data();
  kt += (16 - (reinterpret_cast<std::uintptr_t>(kt) / sizeof(float)) % 16) % 16;
  float* scores = kt + head_dim * padded;
  for (std::size_t j = 0; j < len; ++j) {
    for (std::size_t d = 0; d < head_dim; ++d) kt[d * padded + j] = k[j * stride + d];
  }
  std::size_t row0 = 0;
  for (; row0 + 8 <= len; row0 += 8) attention_scores<8>(q, stride, kt, padded, len, head_dim, scale, scores, row0);
  for (; row0 < len; ++row0) attention_scores<1>(q, stride, kt, padded, len, head_dim, scale, scores, row0);
  softmax_avx512(scores, len, len);
  row0 = 0;
  for (; row0 + 8 <= len; row0 += 8) attention_values<8, NV>(scores, v, stride, len, ctx, ctx_stride, row0);
  for (; row0 < len; ++row0) attention_values<1, NV>(scores, v, stride, len, ctx, ctx_stride, row0);
}

using TileFn = void (*)(const TileArgs&, std::size_t, std::size_t);

template <template <int, int> class Kernel>
struct TileTable {
  TileFn fns[kTilePanels][kTileRows];
  template <int MR, int NP>
  static constexpr void fill(TileTable& t) {
    t.fns[NP - 1][MR - 1] = &Kernel<MR, NP>::run;
    if constexpr (MR < static_cast<int>(kTileRows)) fill<MR + 1, NP>(t);
    else if constexpr (NP < static_cast<int>(kTilePanels)) fill<1, NP + 1>(t);
  }
  constexpr TileTable() : fns{} { fill<1, 1>(*this); }
};

template <int MR, int NP>
struct F32Kernel {
  static void run(const TileArgs& t, std::size_t r, std::size_t p) { tile_f32<MR, NP>(t, r, p); }
};
template <int MR, int NP>
struct Bf16Kernel {
  static void run(const TileArgs& t, std::size_t r, std::size_t p) { tile_bf16<MR, NP>(t, r, p); }
};
template <int MR, int NP>
struct I8Kernel {
  static void run(const TileArgs& t, std::size_t r, std::size_t p) {
    if constexpr (MR <= 4) {
      tile_i8<MR, NP>(t, r, p);
    } else {
      tile_i8<4, NP>(t, r, p);
      tile_i8<MR - 4, NP>(t, r + 4, p);
    }
  }
};

const TileTable<F32Kernel> kF32Tiles;
const TileTable<Bf16Kernel> kBf16Tiles;
const TileTable<I8Kernel> kI8Tiles;

bool cpu_has(const char* what) {
  if (std::strcmp(what, "f32") == 0) {
    static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma");
    return has;
  }
  if (std::strcmp(what, "bf16") == 0) {
    static const bool has = cpu_has("f32") && __builtin_cpu_supports("avx512bf16");
    return has;
  }
  static const bool has = cpu_has("f32") && __builtin_cpu_supports("avx512vnni");
  return has;
}

}  // namespace

LinearIsa best_linear_isa(WeightFormat format) {
  switch (format) {
    case WeightFormat::F32: return cpu_has("f32") ? LinearIsa::Avx512 : LinearIsa::Blas;
    case WeightFormat::BF16: return cpu_has("bf16") ? LinearIsa::Avx512 : LinearIsa::Scalar;
    case WeightFormat::I8: return cpu_has("i8") ? LinearIsa::Avx512 : LinearIsa::Scalar;
  }
  return LinearIsa::Scalar;
}

void gelu_inplace(LinearIsa isa, float* x, std::size_t n) {
  if (isa == LinearIsa::Avx512 && cpu_has("f32")) {
    gelu_avx512(x, n);
    return;
  }
  for (std::size_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * static_cast<float>(M_SQRT1_2)));
}

void layer_norm_rows(LinearIsa isa, float* x, std::size_t rows, std::size_t dim, const float* gamma,
                     const float* beta, float eps) {
  if (isa == LinearIsa::Avx512 && cpu_has("f32") && dim % 16 == 0) {
    layer_norm_avx512(x, rows, dim, gamma, beta, eps);
    return;
  }
  for (std::size_t r = 0; r < rows; ++r) {
    float* v = x + r * dim;
    double mean = 0;
    for (std::size_t j = 0; j < dim; ++j) mean += v[j];
    mean /= static_cast<double>(dim);
    double var = 0;
    for (std::size_t j = 0; j < dim; ++j) var += (v[j] - mean) * (v[j] - mean);
    var /= static_cast<double>(dim);
    const double inv = 1.0 / std::sqrt(var + eps);
    for (std::size_t j = 0; j < dim; ++j) v[j] = static_cast<float>((v[j] - mean) * inv) * gamma[j] + beta[j];
  }
}

void softmax_rows(LinearIsa isa, float* x, std::size_t rows, std::size_t len) {
  if (len == 0) return;
  if (isa == LinearIsa::Avx512 && cpu_has("f32")) {
    softmax_avx512(x, rows, len);
    return;
  }
  for (std::size_t r = 0; r < rows; ++r) {
    float* row = x + r * len;
    const float top = *std::max_element(row, row + len);
    float sum = 0;
    for (std::size_t c = 0; c < len; ++c) sum += (row[c] = std::exp(row[c] - top));
    const float inv = 1.0f / sum;
    for (std::size_t c = 0; c < len; ++c) row[c] *= inv;
  }
}

void attention_head(LinearIsa isa, const float* q, const float* k, const float* v, std::size_t stride,
                    std::size_t len, std::size_t head_dim, float scale, float* ctx, std::size_t ctx_stride,
                    std::vector<float>& scratch) {
  if (len == 0) return;
  if (isa == LinearIsa::Avx512 && cpu_has("f32") && head_dim % 16 == 0 && head_dim <= 64) {
    switch (head_dim / 16) {
      case 1: attention_avx512<1>(q, k, v, stride, len, scale, ctx, ctx_stride, scratch); return;
      case 2: attention_avx512<2>(q, k, v, stride, len, scale, ctx, ctx_stride, scratch); return;
      case 3: attention_avx512<3>(q, k, v, stride, len, scale, ctx, ctx_stride, scratch); return;
      default: attention_avx512<4>(q, k, v, stride, len, scale, ctx, ctx_stride, scratch); return;
    }
  }
  scratch.resize(len * len);
  float* scores = scratch.data();
  if (isa == LinearIsa::Blas) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(len), static_cast<int>(len),
                static_cast<int>(head_dim), scale, q, static_cast<int>(stride), k, static_cast<int>(stride), 0.0f,
                scores, static_cast<int>(len));
  } else {
    for (std::size_t i = 0; i < len; ++i) {
      for (std::size_t j = 0; j < len; ++j) {
        float dot = 0.0f;
        for (std::size_t d = 0; d < head_dim; ++d) dot += q[i * stride + d] * k[j * stride + d];
        scores[i * len + j] = dot * scale;
      }
    }
  }
  softmax_rows(LinearIsa::Scalar, scores, len, len);
  if (isa == LinearIsa::Blas) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(len), static_cast<int>(head_dim),
                static_cast<int>(len), 1.0f, scores, static_cast<int>(len), v, static_cast<int>(stride), 0.0f, ctx,
                static_cast<int>(ctx_stride));
    return;
  }
  for (std::size_t i = 0; i < len; ++i) {
    float* out = ctx + i * ctx_stride;
    std::fill_n(out, head_dim, 0.0f);
    for (std::size_t j = 0; j < len; ++j) {
      for (std::size_t d = 0; d < head_dim; ++d) out[d] += scores[i * len + j] * v[j * stride + d];
    }
  }
}

std::uint16_t round_to_bf16(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>(bits >> 16);
}

float quantize_row_i8(const float* x, std::size_t n, std::int8_t* q) {
  float max_abs = 0.0f;
  for (std::size_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
  if (max_abs == 0.0f || !std::isfinite(max_abs)) {
    std::fill_n(q, n, std::int8_t{0});
    return 0.0f;
  }
  const float scale = max_abs / 127.0f;
  const float inv = 127.0f / max_abs;
  for (std::size_t i = 0; i < n; ++i) {
    const float v = std::clamp(std::nearbyint(x[i] * inv), -127.0f, 127.0f);
    q[i] = static_cast<std::int8_t>(v);
  }
  return scale;
}

PackedLinear::PackedLinear(WeightFormat format, const float* weight, const float* bias, std::size_t out,
                           std::size_t in, bool blas_copy)
    : format_(format), in_(in), out_(out) {
  if (in == 0 || out == 0) throw std::invalid_argument("PackedLinear: empty weight");
  panels_ = (out + kPanel - 1) / kPanel;
  const std::size_t group = k_group(format), padding = k_padding(format);
  k_padded_ = (in + padding - 1) / padding * padding;
  bias_.assign(panels_ * kPanel, 0.0f);
  std::copy_n(bias, out, bias_.begin());
  const std::size_t per_panel = k_padded_ * kPanel;
  // Element (k, column c) of W^T inside the packed panels.
  auto slot = [&](std::size_t k, std::size_t c) {
    const std::size_t p = c / kPanel, j = c % kPanel;
    return p * per_panel + (k / group) * kPanel * group + j * group + k % group;
  };
  switch (format) {
    case WeightFormat::F32:
      if (blas_copy) f32_rows_.assign(weight, weight + out * in);
      f32_.assign(panels_ * per_panel, 0.0f);
      for (std::size_t c = 0; c < out; ++c) {
        for (std::size_t k = 0; k < in; ++k) f32_[slot(k, c)] = weight[c * in + k];
      }
      break;
    case WeightFormat::BF16:
      bf16_.assign(panels_ * per_panel, 0);
      for (std::size_t c = 0; c < out; ++c) {
        for (std::size_t k = 0; k < in; ++k) bf16_[slot(k, c)] = round_to_bf16(weight[c * in + k]);
      }
      break;
    case WeightFormat::I8: {
      i8_.assign(panels_ * per_panel, 0);
      const std::size_t blocks = k_padded_ / kInt8ActivationBlock, columns = panels_ * kPanel;
      column_scale_.assign(blocks * columns, 0.0f);
      column_sum_.assign(blocks * columns, 0);
      std::vector<std::int8_t> q(kInt8ActivationBlock);
      for (std::size_t c = 0; c < out; ++c) {
        for (std::size_t blk = 0; blk < blocks; ++blk) {
          const std::size_t first = blk * kInt8ActivationBlock;
          const std::size_t n = first < in ? std::min(kInt8ActivationBlock, in - first) : 0;
          column_scale_[blk * columns + c] = quantize_row_i8(weight + c * in + first, n, q.data());
          for (std::size_t k = 0; k < n; ++k) {
            i8_[slot(first + k, c)] = q[k];
            column_sum_[blk * columns + c] += q[k];
          }
        }
      }
      break;
    }
  }
}

float PackedLinear::effective_weight(std::size_t o, std::size_t i) const {
  const std::size_t group = k_group(format_), per_panel = k_padded_ * kPanel;
  const std::size_t at = (o / kPanel) * per_panel + (i / group) * kPanel * group + (o % kPanel) * group + i % group;
  switch (format_) {
    case WeightFormat::F32: return f32_[at];
    case WeightFormat::BF16: return bf16_to_float(bf16_[at]);
    case WeightFormat::I8:
      return static_cast<float>(i8_[at]) * column_scale_[i / kInt8ActivationBlock * panels_ * kPanel + o];
  }
  return 0.0f;
}

std::size_t PackedLinear::bytes() const {
  return (f32_.size() + f32_rows_.size()) * sizeof(float) + bf16_.size() * sizeof(std::uint16_t) + i8_.size() +
         (column_scale_.size() + bias_.size()) * sizeof(float) + column_sum_.size() * sizeof(std::int32_t);
}

void PackedLinear::apply(LinearIsa isa, const float* x, std::size_t rows, float* y, int threads) const {
  if (rows == 0) return;
  if (isa == LinearIsa::Blas && format_ == WeightFormat::F32 && !f32_rows_.empty()) {
    for (std::size_t r = 0; r < rows; ++r) std::copy_n(bias_.data(), out_, y + r * out_);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(out_),
                static_cast<int>(in_), 1.0f, x, static_cast<int>(in_), f32_rows_.data(), static_cast<int>(in_), 1.0f,
                y, static_cast<int>(out_));
    return;
  }
  const bool vector = isa == LinearIsa::Avx512 && best_linear_isa(format_) == LinearIsa::Avx512;
  thread_local Activations act;
  prepare(format_, vector, x, rows, in_, k_padded_, act);
  struct Release {  // a long batch's activations are not kept by the thread
    ~Release() {
      if (act.words.capacity() > (std::size_t{1} << 20)) std::vector<std::uint32_t>().swap(act.words);
    }
  } release;
  TileArgs t{};
  t.layer = this;
  t.act = &act;
  t.bias = bias_.data();
  t.column_scale = column_scale_.data();
  t.column_sum = column_sum_.data();
  t.columns = panels_ * kPanel;
  t.panel_stride = k_padded_ * kPanel;
  t.k_steps = k_padded_ / k_group(format_);
  t.y = y;
  t.out = out_;
  switch (format_) {
    case WeightFormat::F32: t.weights = f32_.data(); break;
    case WeightFormat::BF16: t.weights = bf16_.data(); break;
    case WeightFormat::I8: t.weights = i8_.data(); break;
  }
  const auto* fns = format_ == WeightFormat::F32    ? kF32Tiles.fns
                    : format_ == WeightFormat::BF16 ? kBf16Tiles.fns
                                                    : kI8Tiles.fns;
  const std::size_t tiles = (panels_ + kTilePanels - 1) / kTilePanels;
  parallel_for(tiles, threads, [&](std::size_t tile) {
    const std::size_t panel0 = tile * kTilePanels;
    const std::size_t np = std::min(kTilePanels, panels_ - panel0);
    for (std::size_t row0 = 0; row0 < rows; row0 += kTileRows) {
      const std::size_t mr = std::min(kTileRows, rows - row0);
      if (vector) {
        fns[np - 1][mr - 1](t, row0, panel0);
      } else {
        tile_scalar(format_, t, row0, mr, panel0, np);
      }
    }
  });
}

}  // namespace ldaproj::detail
