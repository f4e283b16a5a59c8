// The teacher: routing of queries over head centroids and projection onto
// the heads' answer embeddings. One query streams the heads once through the
// online-softmax kernel (split over threads for large n); a batch goes
// through two GEMMs per block of heads with the same online softmax, so no
// queries x heads matrix is built unless routing weights are asked for.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "common/parallel.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"
#include "teacher/head_storage.hpp"
#include "teacher/routing_kernels.hpp"

namespace ldaproj {

using detail::HeadRows;
using detail::OnlineSoftmax;

namespace {

// Below this many heads per thread, waking another thread costs more than it saves.
constexpr std::size_t kMinHeadsPerThread = 8192;
// Heads per GEMM block in the batch path: the scores block (batch x block)
// stays in L2 for a batch of 256.
constexpr std::size_t kGemmBlock = 512;

void check_temperature(float temperature) {
  if (!(temperature > 0.0f) || !std::isfinite(temperature)) {
    throw InputError("temperature must be a positive finite number, got " + std::to_string(temperature));
  }
}

}  // namespace

std::string_view to_string(Precision precision) {
  switch (precision) {
    case Precision::F32: return "fp32";
    case Precision::BF16: return "bf16";
    case Precision::I8: return "int8";
  }
  return "?";
}

Precision parse_precision(std::string_view name) {
  if (name == "fp32" || name == "f32") return Precision::F32;
  if (name == "bf16") return Precision::BF16;
  if (name == "int8" || name == "i8") return Precision::I8;
  throw InputError("unknown precision '" + std::string(name) + "' (expected fp32, bf16 or int8)");
}

void normalize_rows(Matrix& m, std::string_view what) {
  for (std::size_t i = 0; i < m.rows; ++i) {
    float* r = m.row(i);
    double sq = 0.0;
    for (std::size_t j = 0; j < m.cols; ++j) sq += static_cast<double>(r[j]) * r[j];
    if (!std::isfinite(sq)) {
      throw InputError(std::string(what) + " #" + std::to_string(i) + " contains NaN or Inf values");
    }
    if (sq <= 0.0) {
      throw InputError(std::string(what) + " #" + std::to_string(i) +
                       " is a zero vector; it has no direction to compare by cosine");
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(sq));
    for (std::size_t j = 0; j < m.cols; ++j) r[j] *= inv;
  }
}

bool has_unit_rows(const Matrix& m, double tolerance) {
  for (std::size_t i = 0; i < m.rows; ++i) {
    const float* r = m.row(i);
    double sq = 0.0;
    for (std::size_t j = 0; j < m.cols; ++j) sq += static_cast<double>(r[j]) * r[j];
    if (!(std::abs(sq - 1.0) <= tolerance)) return false;
  }
  return true;
}

void softmax_inplace(float* scores, std::size_t n, float temperature) {
  if (n == 0) return;
  check_temperature(temperature);
  // Subtracting the max keeps exp() in range for any temperature; the sum is
  // then >= 1, so the division is always safe.
  const float inv_t = 1.0f / temperature;
  float max_score = scores[0];
  for (std::size_t i = 1; i < n; ++i) max_score = std::max(max_score, scores[i]);
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    scores[i] = std::exp((scores[i] - max_score) * inv_t);
    sum += scores[i];
  }
  const float inv_sum = static_cast<float>(1.0 / sum);
  for (std::size_t i = 0; i < n; ++i) scores[i] *= inv_sum;
}

struct MultiHeadProjection::Storage {
  HeadRows centroids;
  HeadRows answers;
  detail::Isa isa = detail::Isa::Scalar;
  int threads = 1;

  std::size_t heads() const { return centroids.rows(); }
  std::size_t dim() const { return centroids.dim(); }

  // Head rows [begin, end) of `rows` as fp32: in place when stored so,
  // otherwise unpacked into `scratch`.
  static const float* block(const HeadRows& rows, std::size_t begin, std::size_t end,
                            std::vector<float>& scratch) {
    if (rows.precision() == Precision::F32) return rows.f32_row(begin);
    scratch.resize((end - begin) * rows.dim());
    rows.unpack(begin, end, scratch.data());
    return scratch.data();
  }

  // One unit query; `scores` (heads long) receives the cosines when not null.
  void project_one(const float* q, float inv_t, float* out, float* scores) const {
    const std::size_t n = heads();
    const std::size_t tasks =
        std::clamp<std::size_t>(n / kMinHeadsPerThread, 1, static_cast<std::size_t>(threads));
    std::vector<OnlineSoftmax> parts(tasks, OnlineSoftmax(dim()));
    // Split on 64-head boundaries so every task streams whole kernel blocks.
    const std::size_t per_task = (n + tasks - 1) / tasks;
    const std::size_t stride = (per_task + 63) / 64 * 64;
    detail::parallel_for(tasks, threads, [&](std::size_t t) {
      const std::size_t begin = std::min(n, t * stride), end = std::min(n, begin + stride);
      detail::stream_heads(isa, centroids, answers, q, inv_t, begin, end, scores, parts[t]);
    });
    for (std::size_t t = 1; t < tasks; ++t) parts[0].merge(parts[t], inv_t);
    std::copy(parts[0].acc.begin(), parts[0].acc.end(), out);
    if (scores) finish_weights(scores, parts[0], inv_t);
  }

  // Raw cosines -> routing weights with the final max and sum.
  void finish_weights(float* scores, const OnlineSoftmax& st, float inv_t) const {
    detail::exp_shifted(isa, scores, heads(), st.max, inv_t);
    const float inv_sum = static_cast<float>(1.0 / st.sum);
    for (std::size_t h = 0; h < heads(); ++h) scores[h] *= inv_sum;
  }

  // Unit queries (rows of q) through GEMM per block of heads.
  void project_batch(const Matrix& q, float inv_t, Matrix& out, Matrix* scores) const {
    const std::size_t b = q.rows, n = heads(), d = dim();
    detail::use_blas_threads(threads);
    std::vector<OnlineSoftmax> st(b, OnlineSoftmax(0));
    out = Matrix(b, d);
    std::vector<float> s(b * kGemmBlock), c_scratch, a_scratch;
    for (std::size_t h0 = 0; h0 < n; h0 += kGemmBlock) {
      const std::size_t hb = std::min(kGemmBlock, n - h0);
      const float* c = block(centroids, h0, h0 + hb, c_scratch);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(b), static_cast<int>(hb),
                  static_cast<int>(d), 1.0f, q.data.data(), static_cast<int>(d), c, static_cast<int>(d), 0.0f,
                  s.data(), static_cast<int>(hb));
      for (std::size_t i = 0; i < b; ++i) {
        float* si = s.data() + i * hb;
        if (scores) std::copy(si, si + hb, scores->row(i) + h0);
        const float block_max = *std::max_element(si, si + hb);
        if (block_max > st[i].max) {
          if (st[i].sum != 0.0) {
            const float scale = std::exp((st[i].max - block_max) * inv_t);
            cblas_sscal(static_cast<int>(d), scale, out.row(i), 1);
            st[i].sum *= scale;
          }
          st[i].max = block_max;
        }
        st[i].sum += detail::exp_shifted(isa, si, hb, st[i].max, inv_t);
      }
      const float* a = block(answers, h0, h0 + hb, a_scratch);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(b), static_cast<int>(d),
                  static_cast<int>(hb), 1.0f, s.data(), static_cast<int>(hb), a, static_cast<int>(d), 1.0f,
                  out.data.data(), static_cast<int>(d));
    }
    if (scores) {
      for (std::size_t i = 0; i < b; ++i) finish_weights(scores->row(i), st[i], inv_t);
    }
  }
};

MultiHeadProjection::MultiHeadProjection() : storage_(std::make_shared<Storage>()) {}
MultiHeadProjection::MultiHeadProjection(const MultiHeadProjection&) = default;
MultiHeadProjection& MultiHeadProjection::operator=(const MultiHeadProjection&) = default;
MultiHeadProjection::MultiHeadProjection(MultiHeadProjection&&) noexcept = default;
MultiHeadProjection& MultiHeadProjection::operator=(MultiHeadProjection&&) noexcept = default;
MultiHeadProjection::~MultiHeadProjection() = default;

MultiHeadProjection::MultiHeadProjection(Matrix centroids, Matrix answers, float temperature,
                                         TeacherOptions options)
    : temperature_(temperature), options_(options) {
  if (centroids.rows != answers.rows || centroids.cols != answers.cols) {
    throw InputError("multi-head projection: centroids are " + std::to_string(centroids.rows) + "x" +
                     std::to_string(centroids.cols) + " but answers are " + std::to_string(answers.rows) +
                     "x" + std::to_string(answers.cols));
  }
  if (centroids.rows == 0) throw InputError("multi-head projection needs at least one head");
  check_temperature(temperature);
  if (options.threads < 0) throw InputError("threads must be 0 (all cores) or positive");
  normalize_rows(centroids, "centroid");
  normalize_rows(answers, "answer embedding");
  auto storage = std::make_shared<Storage>();
  storage->centroids = HeadRows(centroids, options.precision);
  storage->answers = HeadRows(answers, options.precision);
  storage->isa = detail::best_isa(centroids.cols);
  storage->threads = options.threads > 0 ? options.threads : detail::available_cores();
  storage_ = std::move(storage);
}

std::size_t MultiHeadProjection::num_heads() const { return storage_->heads(); }
std::size_t MultiHeadProjection::dim() const { return storage_->dim(); }
Matrix MultiHeadProjection::centroids() const { return storage_->centroids.unpack(); }
Matrix MultiHeadProjection::answers() const { return storage_->answers.unpack(); }
void MultiHeadProjection::centroid_row(std::size_t head, float* out) const {
  storage_->centroids.unpack(head, head + 1, out);
}
void MultiHeadProjection::answer_row(std::size_t head, float* out) const {
  storage_->answers.unpack(head, head + 1, out);
}
std::size_t MultiHeadProjection::storage_bytes() const {
  return storage_->centroids.bytes() + storage_->answers.bytes();
}

namespace {
Matrix unit_queries(const Matrix& queries, std::size_t dim) {
  if (queries.cols != dim) {
    throw InputError("query embeddings have dimension " + std::to_string(queries.cols) +
                     ", the projection expects " + std::to_string(dim));
  }
  Matrix q = queries;
  normalize_rows(q, "query");
  return q;
}
}  // namespace

Matrix MultiHeadProjection::route_scores(const Matrix& queries) const {
  const Storage& s = *storage_;
  const Matrix q = unit_queries(queries, dim());
  Matrix scores(q.rows, s.heads());
  std::vector<float> scratch;
  for (std::size_t h0 = 0; h0 < s.heads(); h0 += kGemmBlock) {
    const std::size_t hb = std::min(kGemmBlock, s.heads() - h0);
    const float* c = Storage::block(s.centroids, h0, h0 + hb, scratch);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(q.rows), static_cast<int>(hb),
                static_cast<int>(dim()), 1.0f, q.data.data(), static_cast<int>(dim()), c,
                static_cast<int>(dim()), 0.0f, scores.data.data() + h0, static_cast<int>(s.heads()));
  }
  return scores;
}

Matrix MultiHeadProjection::routing_weights(const Matrix& queries, float temperature) const {
  Matrix weights;
  project(queries, temperature, &weights);
  return weights;
}

Matrix MultiHeadProjection::project(const Matrix& queries, float temperature, Matrix* weights_out) const {
  check_temperature(temperature);
  const Storage& s = *storage_;
  const Matrix q = unit_queries(queries, dim());
  const float inv_t = 1.0f / temperature;
  Matrix p;
  Matrix weights;
  if (weights_out) weights = Matrix(q.rows, s.heads());
  if (q.rows == 1) {
    p = Matrix(1, dim());
    s.project_one(q.row(0), inv_t, p.row(0), weights_out ? weights.row(0) : nullptr);
  } else {
    s.project_batch(q, inv_t, p, weights_out ? &weights : nullptr);
  }
  // A convex mix of unit vectors is zero only if answers cancel exactly;
  // normalize_rows reports that case instead of returning NaN.
  normalize_rows(p, "projected query");
  if (weights_out) *weights_out = std::move(weights);
  return p;
}

}  // namespace ldaproj
