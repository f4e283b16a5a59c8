// The encoder's packed linear kernels (every weight format, scalar and
// AVX-512) against a double-precision product of the values they multiply,
// and the vectorised GELU against std::erf in double.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "embed/encoder_kernels.hpp"

namespace {

using ldaproj::detail::LinearIsa;
using ldaproj::detail::PackedLinear;
using ldaproj::detail::WeightFormat;

std::string format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::F32: return "f32";
    case WeightFormat::BF16: return "bf16";
    case WeightFormat::I8: return "i8";
  }
  return "?";
}

std::vector<float> random_values(std::size_t n, std::mt19937& rng, float spread) {
  std::normal_distribution<float> dist(0.0f, spread);
  std::vector<float> out(n);
  for (float& v : out) v = dist(rng);
  return out;
}

// The activations as the kernel sees them: unchanged (fp32), rounded to bf16,
// or quantised per row to int8 and scaled back.
std::vector<double> effective_activations(WeightFormat f, const std::vector<float>& x, std::size_t rows,
                                          std::size_t in) {
  std::vector<double> out(x.begin(), x.end());
  if (f == WeightFormat::BF16) {
    for (std::size_t i = 0; i < x.size(); ++i) {
      out[i] = ldaproj::detail::bf16_to_float(ldaproj::detail::round_to_bf16(x[i]));
    }
  } else if (f == WeightFormat::I8) {
    constexpr std::size_t block = ldaproj::detail::kInt8ActivationBlock;
    std::vector<std::int8_t> q(block);
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t first = 0; first < in; first += block) {
        const std::size_t n = std::min(block, in - first);
        const float scale = ldaproj::detail::quantize_row_i8(x.data() + r * in + first, n, q.data());
        for (std::size_t k = 0; k < n; ++k) out[r * in + first + k] = static_cast<double>(q[k]) * scale;
      }
    }
  }
  return out;
}

struct Shape {
  std::size_t out, in, rows;
};

class LinearKernels : public ::testing::TestWithParam<std::tuple<WeightFormat, LinearIsa>> {};

TEST_P(LinearKernels, MatchTheDoubleReference) {
  const auto [format, isa] = GetParam();
  if (isa == LinearIsa::Avx512 && ldaproj::detail::best_linear_isa(format) != LinearIsa::Avx512) {
    GTEST_SKIP() << "this CPU lacks the AVX-512 features for " << format_name(format);
  }
  std::mt19937 rng(42);
  // Odd sizes exercise partial panels, partial tiles (rows not a multiple of
  // 8, panels not a multiple of 3) and k padding to pairs and quads.
  const std::vector<Shape> shapes = {{1, 1, 1},    {16, 16, 8},   {37, 19, 9},   {48, 384, 1},
                                     {50, 33, 17}, {96, 130, 20}, {1152, 384, 3}, {384, 1536, 11}};
  for (const Shape& s : shapes) {
    const auto weight = random_values(s.out * s.in, rng, 0.05f);
    const auto bias = random_values(s.out, rng, 0.1f);
    const auto x = random_values(s.rows * s.in, rng, 1.0f);
    const PackedLinear layer(format, weight.data(), bias.data(), s.out, s.in, isa == LinearIsa::Blas);
    const auto xe = effective_activations(format, x, s.rows, s.in);
    for (int threads : {1, 2}) {
      std::vector<float> y(s.rows * s.out, -1.0f);
      layer.apply(isa, x.data(), s.rows, y.data(), threads);
      for (std::size_t r = 0; r < s.rows; ++r) {
        for (std::size_t o = 0; o < s.out; ++o) {
          double ref = bias[o], magnitude = std::abs(bias[o]);
          for (std::size_t k = 0; k < s.in; ++k) {
            const double term = xe[r * s.in + k] * layer.effective_weight(o, k);
            ref += term;
            magnitude += std::abs(term);
          }
          // fp32 accumulation: a few ulps of the sum of magnitudes.
          ASSERT_NEAR(y[r * s.out + o], ref, 1e-6 * magnitude + 1e-7)
              << format_name(format) << " out " << s.out << " in " << s.in << " rows " << s.rows << " threads "
              << threads << " at (" << r << ", " << o << ")";
        }
      }
    }
  }
}

TEST_P(LinearKernels, EffectiveWeightsAreCloseToTheOriginal) {
  const auto [format, isa] = GetParam();
  (void)isa;
  std::mt19937 rng(7);
  const auto weight = random_values(40 * 24, rng, 0.05f);
  const std::vector<float> bias(40, 0.0f);
  const PackedLinear layer(format, weight.data(), bias.data(), 40, 24);
  for (std::size_t o = 0; o < 40; ++o) {
    float max_abs = 0.0f;
    for (std::size_t k = 0; k < 24; ++k) max_abs = std::max(max_abs, std::abs(weight[o * 24 + k]));
    for (std::size_t k = 0; k < 24; ++k) {
      const float w = weight[o * 24 + k], e = layer.effective_weight(o, k);
      switch (format) {
        case WeightFormat::F32: EXPECT_EQ(e, w); break;
        case WeightFormat::BF16: EXPECT_NEAR(e, w, std::abs(w) / 256.0f); break;
        case WeightFormat::I8: EXPECT_NEAR(e, w, max_abs / 254.0f * 1.0001f); break;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, LinearKernels,
                         ::testing::Values(std::tuple{WeightFormat::F32, LinearIsa::Scalar},
                                           std::tuple{WeightFormat::F32, LinearIsa::Avx512},
                                           std::tuple{WeightFormat::F32, LinearIsa::Blas},
                                           std::tuple{WeightFormat::BF16, LinearIsa::Scalar},
                                           std::tuple{WeightFormat::BF16, LinearIsa::Avx512},
                                           std::tuple{WeightFormat::I8, LinearIsa::Scalar},
                                           std::tuple{WeightFormat::I8, LinearIsa::Avx512}),
                         [](const auto& info) {
                           const LinearIsa isa = std::get<1>(info.param);
                           return format_name(std::get<0>(info.param)) +
                                  (isa == LinearIsa::Scalar ? "_scalar" : isa == LinearIsa::Avx512 ? "_avx512" : "_blas");
                         });

TEST(Bf16Rounding, RoundsToNearestEven) {
  using ldaproj::detail::round_to_bf16;
  EXPECT_EQ(round_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(round_to_bf16(-2.0f), 0xc000);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa.
  EXPECT_EQ(round_to_bf16(1.0f + 1.0f / 256.0f), 0x3f80);
  EXPECT_EQ(round_to_bf16(1.0f + 3.0f / 256.0f), 0x3f82);
  EXPECT_EQ(round_to_bf16(1.0f + 1.0f / 256.0f + 1.0f / 65536.0f), 0x3f81);
  EXPECT_TRUE(std::isnan(ldaproj::detail::bf16_to_float(round_to_bf16(std::nanf("")))));
  EXPECT_EQ(round_to_bf16(INFINITY), 0x7f80);
}

TEST(Int8Quantisation, ScalesByTheLargestMagnitude) {
  const std::vector<float> x = {0.5f, -1.0f, 0.25f, 0.0f, 1.0f / 254.0f * 1.01f};
  std::vector<std::int8_t> q(x.size());
  const float scale = ldaproj::detail::quantize_row_i8(x.data(), x.size(), q.data());
  EXPECT_FLOAT_EQ(scale, 1.0f / 127.0f);
  EXPECT_EQ(q, (std::vector<std::int8_t>{64, -127, 32, 0, 1}));
  const std::vector<float> zeros(4, 0.0f);
  EXPECT_EQ(ldaproj::detail::quantize_row_i8(zeros.data(), zeros.size(), q.data()), 0.0f);
  EXPECT_EQ(q[0], 0);
}

class Gelu : public ::testing::TestWithParam<LinearIsa> {};

TEST_P(Gelu, MatchesErfInDouble) {
  std::vector<float> x;
  for (float v = -12.0f; v <= 12.0f; v += 0.00137f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 2.8284f, 2.8285f, 5.6f, -5.7f, 100.0f, -100.0f}) x.push_back(v);
  std::vector<float> y = x;
  // An odd length leaves a masked tail for the vector version.
  ldaproj::detail::gelu_inplace(GetParam(), y.data(), y.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double ref = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
    ASSERT_NEAR(y[i], ref, 1e-7 * std::abs(v) + 2e-7 * std::abs(ref) + 1e-37) << "x = " << x[i];
  }
}

INSTANTIATE_TEST_SUITE_P(BothIsas, Gelu, ::testing::Values(LinearIsa::Scalar, LinearIsa::Avx512),
                         [](const auto& info) { return std::string(info.param == LinearIsa::Scalar ? "scalar" : "avx512"); });

}  // namespace

namespace {

class LayerNorm : public ::testing::TestWithParam<LinearIsa> {};

TEST_P(LayerNorm, MatchesTheDoubleReference) {
  std::mt19937 rng(3);
  const std::size_t rows = 5, dim = 48;
  auto x = random_values(rows * dim, rng, 2.0f);
  for (std::size_t j = 0; j < dim; ++j) x[j] += 40.0f;  // a large mean must not cost precision
  const auto gamma = random_values(dim, rng, 1.0f), beta = random_values(dim, rng, 0.5f);
  auto y = x;
  ldaproj::detail::layer_norm_rows(GetParam(), y.data(), rows, dim, gamma.data(), beta.data(), 1e-12f);
  for (std::size_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (std::size_t j = 0; j < dim; ++j) mean += x[r * dim + j];
    mean /= dim;
    for (std::size_t j = 0; j < dim; ++j) var += (x[r * dim + j] - mean) * (x[r * dim + j] - mean);
    var /= dim;
    for (std::size_t j = 0; j < dim; ++j) {
      const double ref = (x[r * dim + j] - mean) / std::sqrt(var + 1e-12) * gamma[j] + beta[j];
      ASSERT_NEAR(y[r * dim + j], ref, 2e-5 * (std::abs(gamma[j]) + std::abs(ref))) << "row " << r << " col " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(BothIsas, LayerNorm, ::testing::Values(LinearIsa::Scalar, LinearIsa::Avx512),
                         [](const auto& info) { return std::string(info.param == LinearIsa::Scalar ? "scalar" : "avx512"); });

}  // namespace

namespace {

class Softmax : public ::testing::TestWithParam<LinearIsa> {};

TEST_P(Softmax, MatchesTheDoubleReference) {
  std::mt19937 rng(5);
  for (std::size_t len : {1, 7, 16, 33, 115}) {
    const std::size_t rows = 3;
    auto x = random_values(rows * len, rng, 6.0f);
    x[0] = -200.0f;  // underflows to zero
    auto y = x;
    ldaproj::detail::softmax_rows(GetParam(), y.data(), rows, len);
    for (std::size_t r = 0; r < rows; ++r) {
      double top = -1e300, sum = 0;
      for (std::size_t c = 0; c < len; ++c) top = std::max(top, static_cast<double>(x[r * len + c]));
      for (std::size_t c = 0; c < len; ++c) sum += std::exp(x[r * len + c] - top);
      for (std::size_t c = 0; c < len; ++c) {
        const double shifted = x[r * len + c] - top, ref = std::exp(shifted) / sum;
        // x - max is rounded to fp32 first: relative error up to |x - max| ulps.
        ASSERT_NEAR(y[r * len + c], ref, (5e-7 + 1.2e-7 * std::abs(shifted)) * ref + 1e-30) << "len " << len << " row " << r << " col " << c;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(BothIsas, Softmax, ::testing::Values(LinearIsa::Scalar, LinearIsa::Avx512),
                         [](const auto& info) { return std::string(info.param == LinearIsa::Scalar ? "scalar" : "avx512"); });

}  // namespace

namespace {

class Attention : public ::testing::TestWithParam<LinearIsa> {};

TEST_P(Attention, MatchesTheDoubleReference) {
  std::mt19937 rng(11);
  std::vector<float> scratch;
  for (std::size_t head_dim : {16, 24, 32, 64}) {
    for (std::size_t len : {1, 3, 5, 17, 40}) {
      // q, k and v interleaved in rows of 3 heads, as the fused projection writes them.
      const std::size_t stride = 3 * head_dim + 8, ctx_stride = head_dim + 4;
      const auto qkv = random_values(len * stride, rng, 1.0f);
      const float* q = qkv.data();
      const float* k = qkv.data() + head_dim;
      const float* v = qkv.data() + 2 * head_dim;
      const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      std::vector<float> ctx(len * ctx_stride, -7.0f);
      ldaproj::detail::attention_head(GetParam(), q, k, v, stride, len, head_dim, scale, ctx.data(), ctx_stride,
                                      scratch);
      for (std::size_t i = 0; i < len; ++i) {
        std::vector<double> w(len);
        double top = -1e300, sum = 0;
        for (std::size_t j = 0; j < len; ++j) {
          double dot = 0;
          for (std::size_t d = 0; d < head_dim; ++d) dot += double(q[i * stride + d]) * k[j * stride + d];
          w[j] = dot * scale;
          top = std::max(top, w[j]);
        }
        for (double& x : w) sum += (x = std::exp(x - top));
        for (std::size_t d = 0; d < head_dim; ++d) {
          double ref = 0, magnitude = 0;
          for (std::size_t j = 0; j < len; ++j) {
            ref += w[j] / sum * v[j * stride + d];
            magnitude += w[j] / sum * std::abs(v[j * stride + d]);
          }
          ASSERT_NEAR(ctx[i * ctx_stride + d], ref, 2e-6 * (magnitude + 1.0))
              << "head_dim " << head_dim << " len " << len << " row " << i << " dim " << d;
        }
        for (std::size_t d = head_dim; d < ctx_stride; ++d) ASSERT_EQ(ctx[i * ctx_stride + d], -7.0f) << "wrote past the head";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, Attention, ::testing::Values(LinearIsa::Scalar, LinearIsa::Avx512, LinearIsa::Blas),
                         [](const auto& info) {
                           return std::string(info.param == LinearIsa::Scalar   ? "scalar"
                                              : info.param == LinearIsa::Avx512 ? "avx512"
                                                                                : "blas");
                         });

}  // namespace
