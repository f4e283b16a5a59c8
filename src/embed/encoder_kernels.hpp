// The encoder's fully connected layers, y = x W^T + b, on weights packed once
// at load time into column panels that the kernels stream front to back.
// Three weight formats (fp32; bf16 with bf16 activations; int8 with a scale
// per 64 k values of each weight column and of each activation row), each with a portable scalar
// kernel and an AVX-512 one (F / BF16 / VNNI) chosen at run time.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ldaproj::detail {

enum class WeightFormat { F32, BF16, I8 };
// Blas: fp32 only, OpenBLAS's sgemm on a row-major copy of the weights (what
// fp32 uses on CPUs without AVX-512, where it beats the portable kernel).
enum class LinearIsa { Scalar, Avx512, Blas };

// The fastest kernel this CPU runs for `format` (AVX-512 F/BW/DQ, plus BF16
// for bf16 weights and VNNI for int8 weights; otherwise Blas for fp32 and
// Scalar for the others).
LinearIsa best_linear_isa(WeightFormat format);

// Round to nearest even, as the hardware conversion does (NaN stays NaN).
std::uint16_t round_to_bf16(float value);
inline float bf16_to_float(std::uint16_t bits) {
  const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float out;
  __builtin_memcpy(&out, &wide, sizeof out);
  return out;
}

// int8 weights and activations get one scale per block of this many k values
// (of a weight column, of an activation row), so an outlier costs precision
// only within its own block.
inline constexpr std::size_t kInt8ActivationBlock = 64;

// Symmetric int8 quantisation of one row of activations: q[i] = round(x[i] / s)
// with s = max|x| / 127 (s = 0 for an all-zero row). Returns s.
float quantize_row_i8(const float* x, std::size_t n, std::int8_t* q);

// x = x * (1 + erf(x / sqrt 2)) / 2 in place (exact GELU). The AVX-512
// version evaluates erf by piecewise polynomials (|error| < 1e-7 against the
// correctly rounded erf); Scalar uses std::erf.
void gelu_inplace(LinearIsa isa, float* x, std::size_t n);

// Each row of x (rows x dim) shifted to mean 0 and scaled to variance 1
// (plus eps), then times gamma plus beta, in place. Scalar sums in double; the
// AVX-512 version (dim a multiple of 16) in fp32 lanes.
void layer_norm_rows(LinearIsa isa, float* x, std::size_t rows, std::size_t dim, const float* gamma,
                     const float* beta, float eps);

// Softmax of each row of x (rows x len) in place. The AVX-512 version's exp
// is within 2 ulp of the correctly rounded value; Scalar uses std::exp.
void softmax_rows(LinearIsa isa, float* x, std::size_t rows, std::size_t len);

// Self-attention of one head over one sequence of `len` tokens:
//   ctx_i = sum_j softmax_j(scale * q_i . k_j) v_j
// q, k and v rows (head_dim values each) are `stride` floats apart, ctx rows
// `ctx_stride` apart. `scratch` is reused between calls. AVX-512 needs
// head_dim a multiple of 16 and at most 64; Blas runs the two products through
// OpenBLAS; otherwise Scalar.
void attention_head(LinearIsa isa, const float* q, const float* k, const float* v, std::size_t stride,
                    std::size_t len, std::size_t head_dim, float scale, float* ctx, std::size_t ctx_stride,
                    std::vector<float>& scratch);

class PackedLinear {
 public:
  // Column panels hold 16 outputs; a kernel tile covers up to 3 panels.
  static constexpr std::size_t kPanel = 16;

  PackedLinear() = default;
  // weight: out x in, row-major (PyTorch's layout); bias: out. fp32 weights
  // also keep that row-major copy for LinearIsa::Blas when `blas_copy`.
  PackedLinear(WeightFormat format, const float* weight, const float* bias, std::size_t out, std::size_t in,
               bool blas_copy = false);

  // y[rows x out] = x[rows x in] * W^T + b, with the output columns split over
  // up to `threads` threads (Blas: OpenBLAS's own thread setting). x and y
  // must not overlap. Blas without the copy, or for bf16/int8, runs Scalar.
  void apply(LinearIsa isa, const float* x, std::size_t rows, float* y, int threads) const;

  std::size_t in() const { return in_; }
  std::size_t out() const { return out_; }
  WeightFormat format() const { return format_; }
  // The weight the kernels actually multiply by (bf16-rounded, or dequantised
  // int8), for reference computations in tests.
  float effective_weight(std::size_t o, std::size_t i) const;
  std::size_t bytes() const;

 private:
  WeightFormat format_ = WeightFormat::F32;
  std::size_t in_ = 0, out_ = 0;
  std::size_t panels_ = 0;    // ceil(out / 16)
  std::size_t k_padded_ = 0;  // in, rounded up to the format's group of k (1, 2, or 64 for int8)
  std::vector<float> f32_;         // panel-major: [panel][k][16]
  std::vector<float> f32_rows_;    // out x in, only with blas_copy
  std::vector<std::uint16_t> bf16_;  // [panel][k/2][16][2]
  std::vector<std::int8_t> i8_;      // [panel][k/4][16][4]
  std::vector<float> column_scale_;     // int8: [k block][column]
  std::vector<std::int32_t> column_sum_;  // int8: [k block][column] sum of the quantised weights
  std::vector<float> bias_;             // padded to panels * 16
};

}  // namespace ldaproj::detail
