// The student's lean forward pass: the same arithmetic as the PyTorch module
// (nn.Linear, nn.MultiheadAttention with one query token, LayerNorm, exact
// GELU) over OpenBLAS, batch-first, with each block's key and value
// projections computed once when the weights are loaded.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "ldaproj/error.hpp"
#include "ldaproj/student.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

namespace {

struct Linear {
  Matrix weight;  // out x in
  std::vector<float> bias;

  // out = in * weight^T + bias
  void apply(const float* in, std::size_t rows, float* out) const {
    const int n = static_cast<int>(weight.rows), k = static_cast<int>(weight.cols);
    for (std::size_t r = 0; r < rows; ++r) std::copy(bias.begin(), bias.end(), out + r * weight.rows);
    if (rows == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), n, k, 1.0f, in, k,
                weight.data.data(), k, 1.0f, out, n);
  }
  Matrix apply(const Matrix& in) const {
    Matrix out(in.rows, weight.rows);
    apply(in.data.data(), in.rows, out.data.data());
    return out;
  }
};

Linear linear_from(const StudentWeights& w, const std::string& prefix) {
  const StudentTensor& weight = w.at(prefix + ".weight");
  Linear l;
  l.weight = Matrix(static_cast<std::size_t>(weight.shape[0]), static_cast<std::size_t>(weight.shape[1]));
  l.weight.data = weight.values;
  l.bias = w.at(prefix + ".bias").values;
  return l;
}

struct LayerNorm {
  std::vector<float> gamma, beta;
  float eps = 1e-5f;

  void apply(Matrix& x) const {
    const std::size_t d = x.cols;
    for (std::size_t r = 0; r < x.rows; ++r) {
      float* v = x.row(r);
      double mean = 0.0;
      for (std::size_t j = 0; j < d; ++j) mean += v[j];
      mean /= static_cast<double>(d);
      double var = 0.0;
      for (std::size_t j = 0; j < d; ++j) var += (v[j] - mean) * (v[j] - mean);
      var /= static_cast<double>(d);
      const double inv = 1.0 / std::sqrt(var + static_cast<double>(eps));
      for (std::size_t j = 0; j < d; ++j)
        v[j] = static_cast<float>((v[j] - mean) * inv) * gamma[j] + beta[j];
    }
  }
};

LayerNorm norm_from(const StudentWeights& w, const std::string& prefix) {
  return {w.at(prefix + ".weight").values, w.at(prefix + ".bias").values, w.config.layer_norm_eps};
}

// Exact (erf) GELU, PyTorch's nn.GELU() default.
void gelu_inplace(Matrix& m) {
  constexpr float kInvSqrt2 = 0.70710678118654752f;
  for (float& v : m.data) v = 0.5f * v * (1.0f + std::erf(v * kInvSqrt2));
}

// x + W2 gelu(W1 x + b1) + b2, in place.
struct Mlp {
  Linear up, down;
  void add_to(Matrix& x) const {
    Matrix hidden = up.apply(x);
    gelu_inplace(hidden);
    const Matrix out = down.apply(hidden);
    for (std::size_t i = 0; i < x.data.size(); ++i) x.data[i] += out.data[i];
  }
};

Mlp mlp_from(const StudentWeights& w, const std::string& prefix) {
  return {linear_from(w, prefix + ".0"), linear_from(w, prefix + ".2")};
}

struct Block {
  Linear query;              // the query third of in_proj
  Matrix keys, values;       // learned keys/values already through their projections (m x d)
  Linear out_proj;
  LayerNorm norm1;
  bool has_ffn = false;
  Mlp ffn;
  LayerNorm norm2;
};

}  // namespace

struct StudentModel::Impl {
  StudentConfig config;
  std::size_t parameters = 0;
  Linear input_proj;
  bool has_mlp = false;
  Mlp mlp;
  std::vector<Block> blocks;
};

StudentModel::StudentModel() = default;
StudentModel::StudentModel(const StudentModel& other)
    : impl_(other.impl_ ? std::make_unique<Impl>(*other.impl_) : nullptr) {}
StudentModel& StudentModel::operator=(const StudentModel& other) {
  if (this != &other) impl_ = other.impl_ ? std::make_unique<Impl>(*other.impl_) : nullptr;
  return *this;
}
StudentModel::StudentModel(StudentModel&&) noexcept = default;
StudentModel& StudentModel::operator=(StudentModel&&) noexcept = default;
StudentModel::~StudentModel() = default;

StudentModel::StudentModel(const StudentWeights& w) : impl_(std::make_unique<Impl>()) {
  w.validate("student weights");
  Impl& s = *impl_;
  s.config = w.config;
  s.parameters = w.parameter_count();
  const std::size_t d = w.config.dim;
  s.input_proj = linear_from(w, "input_proj");
  if (w.config.variant == StudentVariant::MlpAttention) {
    s.has_mlp = true;
    s.mlp = mlp_from(w, "mlp");
  }
  for (std::size_t b = 0; b < w.config.layers; ++b) {
    const std::string p = b == 0 ? "" : "blocks." + std::to_string(b) + ".";
    Block block;
    const auto& in_w = w.at(p + "attention.in_proj_weight").values;
    const auto& in_b = w.at(p + "attention.in_proj_bias").values;
    auto third = [&](std::size_t k) {
      Linear l;
      l.weight = Matrix(d, d);
      std::copy(in_w.begin() + static_cast<std::ptrdiff_t>(k * d * d),
                in_w.begin() + static_cast<std::ptrdiff_t>((k + 1) * d * d), l.weight.data.begin());
      l.bias.assign(in_b.begin() + static_cast<std::ptrdiff_t>(k * d),
                    in_b.begin() + static_cast<std::ptrdiff_t>((k + 1) * d));
      return l;
    };
    auto matrix = [&](const std::string& name) {
      const StudentTensor& t = w.at(name);
      Matrix m(static_cast<std::size_t>(t.shape[0]), static_cast<std::size_t>(t.shape[1]));
      m.data = t.values;
      return m;
    };
    block.query = third(0);
    block.keys = third(1).apply(matrix(p + "keys"));
    block.values = third(2).apply(matrix(p + "values"));
    block.out_proj = linear_from(w, p + "attention.out_proj");
    block.norm1 = norm_from(w, p + "norm1");
    if (w.config.variant == StudentVariant::Block) {
      block.has_ffn = true;
      block.ffn = mlp_from(w, p + "ffn");
      block.norm2 = norm_from(w, p + "norm2");
    }
    s.blocks.push_back(std::move(block));
  }
}

Matrix StudentModel::forward(const Matrix& queries, Matrix* attention) const {
  if (!impl_) throw Error("the student model is empty (no weights loaded)");
  const Impl& s = *impl_;
  const std::size_t d = s.config.dim, heads = s.config.num_heads, hd = s.config.head_dim(),
                    m = s.config.num_keys(), batch = queries.rows;
  if (queries.cols != d) {
    throw InputError("query embeddings have dimension " + std::to_string(queries.cols) +
                     ", the student expects " + std::to_string(d));
  }
  Matrix x = s.input_proj.apply(queries);
  if (s.has_mlp) s.mlp.add_to(x);

  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  Matrix scores(batch, m), mixed(batch, d);
  if (attention) *attention = Matrix(batch, m);
  for (std::size_t b = 0; b < s.blocks.size(); ++b) {
    const Block& block = s.blocks[b];
    Matrix q = block.query.apply(x);
    // PyTorch scales the query before the product; doing the same keeps the
    // rounding identical in spirit and the results within 1e-6.
    for (float& v : q.data) v *= scale;
    for (std::size_t h = 0; h < heads; ++h) {
      const std::size_t off = h * hd;
      if (batch > 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(batch), static_cast<int>(m),
                    static_cast<int>(hd), 1.0f, q.data.data() + off, static_cast<int>(d),
                    block.keys.data.data() + off, static_cast<int>(d), 0.0f, scores.data.data(),
                    static_cast<int>(m));
      }
      for (std::size_t r = 0; r < batch; ++r) softmax_inplace(scores.row(r), m, 1.0f);
      if (attention && b == 0) {
        const float share = 1.0f / static_cast<float>(heads);
        for (std::size_t i = 0; i < scores.data.size(); ++i) attention->data[i] += share * scores.data[i];
      }
      if (batch > 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(batch), static_cast<int>(hd),
                    static_cast<int>(m), 1.0f, scores.data.data(), static_cast<int>(m),
                    block.values.data.data() + off, static_cast<int>(d), 0.0f, mixed.data.data() + off,
                    static_cast<int>(d));
      }
    }
    const Matrix attended = block.out_proj.apply(mixed);
    for (std::size_t i = 0; i < x.data.size(); ++i) x.data[i] += attended.data[i];
    block.norm1.apply(x);
    if (block.has_ffn) {
      block.ffn.add_to(x);
      block.norm2.apply(x);
    }
  }
  return x;
}

Matrix StudentModel::project(const Matrix& queries) const {
  Matrix p = forward(queries);
  normalize_rows(p, "student output");
  return p;
}

const StudentConfig& StudentModel::config() const {
  if (!impl_) throw Error("the student model is empty (no weights loaded)");
  return impl_->config;
}

std::size_t StudentModel::parameter_count() const { return impl_ ? impl_->parameters : 0; }
bool StudentModel::empty() const { return !impl_; }

}  // namespace ldaproj
