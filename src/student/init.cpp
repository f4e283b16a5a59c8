// Student initialisation: spherical k-means of the teacher's centroids into
// key groups, the teacher-aligned init built on them, and PyTorch-style
// random init for comparison.
// GCC 12 reports -W(maybe-)uninitialized inside its own AVX-512 intrinsics when
// Eigen's packet code is inlined (see src/teacher/global_projection.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "common/gemm.hpp"
#include "ldaproj/distill.hpp"
#include "ldaproj/error.hpp"

namespace ldaproj {

namespace {

constexpr int kKMeansRounds = 25;

void normalize_or_keep(float* v, std::size_t n) {
  double sq = 0.0;
  for (std::size_t j = 0; j < n; ++j) sq += double(v[j]) * v[j];
  if (sq <= 0.0) return;
  const float inv = static_cast<float>(1.0 / std::sqrt(sq));
  for (std::size_t j = 0; j < n; ++j) v[j] *= inv;
}

std::size_t argmax_row(const float* row, std::size_t n) {
  return static_cast<std::size_t>(std::max_element(row, row + n) - row);
}

// k-means++ seeding on cosine distance, over a sample of at most
// kSeedSample x k points (seeding is sequential in k, so all n would cost
// n x k x d).
constexpr std::size_t kSeedSample = 16;

Matrix seed_centres(const Matrix& all_points, std::size_t k, std::mt19937_64& rng) {
  Matrix sample;
  const Matrix* source = &all_points;
  if (all_points.rows > kSeedSample * k) {
    std::vector<std::size_t> rows(all_points.rows);
    std::iota(rows.begin(), rows.end(), 0);
    std::shuffle(rows.begin(), rows.end(), rng);
    rows.resize(kSeedSample * k);
    sample = Matrix(rows.size(), all_points.cols);
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::copy(all_points.row(rows[i]), all_points.row(rows[i]) + all_points.cols, sample.row(i));
    source = &sample;
  }
  const Matrix& points = *source;
  const std::size_t n = points.rows, d = points.cols;
  Matrix centres(k, d);
  std::vector<double> best(n, std::numeric_limits<double>::infinity());
  std::vector<float> dots(n);
  std::size_t pick = std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
  for (std::size_t c = 0; c < k; ++c) {
    std::copy(points.row(pick), points.row(pick) + d, centres.row(c));
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), static_cast<int>(d), 1.0f, points.data.data(),
                static_cast<int>(d), centres.row(c), 1, 0.0f, dots.data(), 1);
    double total = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const double dist = std::max(0.0, 1.0 - double(dots[i]));
      best[i] = std::min(best[i], dist * dist);
      total += best[i];
    }
    if (c + 1 == k) break;
    if (total <= 0.0) {  // every point coincides with a centre: any pick will do
      pick = std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
      continue;
    }
    double target = std::uniform_real_distribution<double>(0.0, total)(rng);
    pick = n - 1;
    for (std::size_t i = 0; i < n; ++i) {
      target -= best[i];
      if (target <= 0.0) {
        pick = i;
        break;
      }
    }
  }
  return centres;
}

// Linear-layer init as torch.nn.Linear does it: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void torch_linear_init(StudentWeights& w, const std::string& prefix, std::mt19937_64& rng) {
  StudentTensor& weight = w.at(prefix + ".weight");
  const float bound = 1.0f / std::sqrt(static_cast<float>(weight.shape[1]));
  std::uniform_real_distribution<float> u(-bound, bound);
  for (float& v : weight.values) v = u(rng);
  for (float& v : w.at(prefix + ".bias").values) v = u(rng);
}

void fill_normal(std::vector<float>& values, float stddev, std::mt19937_64& rng) {
  std::normal_distribution<float> n(0.0f, stddev);
  for (float& v : values) v = n(rng);
}

void set_identity(StudentTensor& t, float scale) {
  std::fill(t.values.begin(), t.values.end(), 0.0f);
  const auto rows = static_cast<std::size_t>(t.shape[0]), cols = static_cast<std::size_t>(t.shape[1]);
  for (std::size_t i = 0; i < std::min(rows, cols); ++i) t.values[i * cols + i] = scale;
}

std::string block_prefix(std::size_t b) { return b == 0 ? "" : "blocks." + std::to_string(b) + "."; }

// Norms start as identity; the module's last norm scales its output to about
// unit length, the teacher's scale.
void init_norms(StudentWeights& w) {
  const StudentConfig& c = w.config;
  for (std::size_t b = 0; b < c.layers; ++b) {
    const std::string p = block_prefix(b);
    std::vector<std::string> norms{p + "norm1"};
    if (c.variant == StudentVariant::Block) norms.push_back(p + "norm2");
    for (const auto& n : norms) {
      std::fill(w.at(n + ".weight").values.begin(), w.at(n + ".weight").values.end(), 1.0f);
      std::fill(w.at(n + ".bias").values.begin(), w.at(n + ".bias").values.end(), 0.0f);
    }
  }
  const std::string last = block_prefix(c.layers - 1) + (c.variant == StudentVariant::Block ? "norm2" : "norm1");
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  std::fill(w.at(last + ".weight").values.begin(), w.at(last + ".weight").values.end(), scale);
}

// Keys and values for the teacher init: the k-means groups, then (when there
// are more keys than heads) spare keys that start out ignored: they point
// away from the mean key, so every query gives them a logit about 2/tau below
// its best key and they cannot distort the teacher's routing. (Midpoints of
// neighbouring groups, tried first, took attention from the real keys and
// cost 0.013 of initial cosine on the demo.)
void teacher_keys(const HeadGroups& groups, std::size_t m, Matrix& keys, Matrix& values) {
  const std::size_t g = groups.keys.rows, d = groups.keys.cols;
  keys = Matrix(m, d);
  values = Matrix(m, d);
  std::vector<float> mean_key(d, 0.0f), mean_value(d, 0.0f);
  for (std::size_t i = 0; i < g; ++i) {
    for (std::size_t j = 0; j < d; ++j) {
      mean_key[j] += groups.keys(i, j);
      mean_value[j] += groups.values(i, j) / static_cast<float>(g);
    }
  }
  normalize_or_keep(mean_key.data(), d);
  for (std::size_t i = 0; i < m; ++i) {
    if (i < g) {
      std::copy(groups.keys.row(i), groups.keys.row(i) + d, keys.row(i));
      std::copy(groups.values.row(i), groups.values.row(i) + d, values.row(i));
    } else {
      for (std::size_t j = 0; j < d; ++j) keys(i, j) = -mean_key[j];
      std::copy(mean_value.begin(), mean_value.end(), values.row(i));
    }
  }
}

// Rows: the `count` leading principal directions of the centred keys. The
// softmax ignores what all keys share, so the centred span is what a head's
// query/key projection has to keep.
Matrix key_subspace(const Matrix& keys, std::size_t count) {
  const std::size_t m = keys.rows, d = keys.cols;
  Eigen::MatrixXd centred(m, d);
  for (std::size_t j = 0; j < d; ++j) {
    double mean = 0.0;
    for (std::size_t i = 0; i < m; ++i) mean += keys(i, j);
    mean /= static_cast<double>(m);
    for (std::size_t i = 0; i < m; ++i) centred(i, j) = keys(i, j) - mean;
  }
  const Eigen::MatrixXd gram = centred.transpose() * centred;
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(gram);
  Matrix basis(count, d);
  for (std::size_t r = 0; r < count; ++r) {
    const auto col = static_cast<Eigen::Index>(d - 1 - r);  // eigenvalues ascend
    for (std::size_t j = 0; j < d; ++j) basis(r, j) = static_cast<float>(eig.eigenvectors()(static_cast<Eigen::Index>(j), col));
  }
  return basis;
}

}  // namespace

std::string_view to_string(StudentInit init) { return init == StudentInit::Teacher ? "teacher" : "random"; }

StudentInit parse_student_init(std::string_view name) {
  if (name == "teacher" || name == "kmeans") return StudentInit::Teacher;
  if (name == "random") return StudentInit::Random;
  throw InputError("unknown init \"" + std::string(name) + "\"; expected teacher (k-means of the teacher) or random");
}

HeadGroups group_teacher_heads(const MultiHeadProjection& teacher, std::size_t groups, std::uint64_t seed) {
  const Matrix& points = teacher.centroids();
  const std::size_t n = points.rows, d = points.cols;
  if (n == 0) throw InputError("the teacher has no heads to group");
  const std::size_t k = std::max<std::size_t>(1, std::min(groups, n));
  HeadGroups out;
  out.group_of_head.assign(n, 0);
  Matrix centres;
  if (k == n) {
    centres = points;
    std::iota(out.group_of_head.begin(), out.group_of_head.end(), 0);
  } else {
    std::mt19937_64 rng(seed ^ 0x6b65796d65616e73ULL);
    centres = seed_centres(points, k, rng);
    for (int round = 0; round < kKMeansRounds; ++round) {
      Matrix sim;
      detail::gemm_abt(points, centres, sim);
      bool changed = round == 0;
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t best = argmax_row(sim.row(i), k);
        changed |= best != out.group_of_head[i];
        out.group_of_head[i] = best;
      }
      if (!changed) break;
      Matrix sums(k, d);
      std::vector<std::size_t> sizes(k, 0);
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t c = out.group_of_head[i];
        ++sizes[c];
        for (std::size_t j = 0; j < d; ++j) sums(c, j) += points(i, j);
      }
      for (std::size_t c = 0; c < k; ++c) {
        if (sizes[c] == 0) {
          // An empty group takes the point worst served by its own centre.
          std::size_t worst = 0;
          float worst_sim = std::numeric_limits<float>::infinity();
          for (std::size_t i = 0; i < n; ++i) {
            const float s = sim(i, out.group_of_head[i]);
            if (s < worst_sim) worst_sim = s, worst = i;
          }
          std::copy(points.row(worst), points.row(worst) + d, sums.row(c));
          out.group_of_head[worst] = c;
        }
        normalize_or_keep(sums.row(c), d);
      }
      centres = std::move(sums);
    }
  }
  out.keys = centres;
  out.values = Matrix(k, d);
  std::vector<std::size_t> sizes(k, 0);
  const Matrix answers = teacher.answers();  // a copy: unpack once, not per element
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t c = out.group_of_head[i];
    ++sizes[c];
    for (std::size_t j = 0; j < d; ++j) out.values(c, j) += answers(i, j);
  }
  for (std::size_t c = 0; c < k; ++c) {
    // Recompute each key from its final members (k-means may stop mid-update).
    if (k != n) std::fill(out.keys.row(c), out.keys.row(c) + d, 0.0f);
    for (std::size_t j = 0; j < d && sizes[c] > 0; ++j) out.values(c, j) /= static_cast<float>(sizes[c]);
  }
  if (k != n) {
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t j = 0; j < d; ++j) out.keys(out.group_of_head[i], j) += points(i, j);
    }
    for (std::size_t c = 0; c < k; ++c) normalize_or_keep(out.keys.row(c), d);
  }
  return out;
}

Matrix pool_routing(const Matrix& routing, const std::vector<std::size_t>& group_of_head, std::size_t groups) {
  if (group_of_head.size() != routing.cols) {
    throw InputError("pool_routing: " + std::to_string(group_of_head.size()) + " group labels for " +
                     std::to_string(routing.cols) + " heads");
  }
  Matrix pooled(routing.rows, groups);
  for (std::size_t q = 0; q < routing.rows; ++q) {
    const float* w = routing.row(q);
    float* out = pooled.row(q);
    for (std::size_t h = 0; h < routing.cols; ++h) {
      if (group_of_head[h] >= groups) throw InputError("pool_routing: group label out of range");
      out[group_of_head[h]] += w[h];
    }
  }
  return pooled;
}

// The residual stream's query term is 1/gain of the attention output at
// init. A large gain makes the block start close to the teacher's projection
// over the keys (LayerNorm is scale-invariant, so the gain costs nothing
// else); a small one keeps the query, which is the better start when the keys
// are too few for a sharp teacher.
void set_attention_gain(StudentWeights& weights, float gain) {
  if (!(gain > 0.0f) || !std::isfinite(gain)) throw InputError("the attention gain must be a positive number");
  set_identity(weights.at("attention.out_proj.weight"), gain);
}

StudentWeights init_student(const StudentConfig& config, const MultiHeadProjection& teacher, StudentInit init,
                            std::uint64_t seed, std::vector<std::size_t>* group_of_head) {
  config.validate();
  if (teacher.dim() != config.dim) {
    throw InputError("the student's dim " + std::to_string(config.dim) + " differs from the teacher's " +
                     std::to_string(teacher.dim()));
  }
  StudentWeights w = StudentWeights::zeros(config);
  std::mt19937_64 rng(seed);
  const std::size_t d = config.dim, m = config.num_keys(), hd = config.head_dim();
  const HeadGroups groups = group_teacher_heads(teacher, m, seed);
  if (group_of_head) *group_of_head = groups.group_of_head;

  // Feed-forward layers always start like torch.nn.Linear; their output layer
  // starts at zero under the teacher init so each residual MLP is the identity.
  auto init_mlp = [&](const std::string& prefix) {
    torch_linear_init(w, prefix + ".0", rng);
    torch_linear_init(w, prefix + ".2", rng);
    if (init == StudentInit::Teacher) {
      std::fill(w.at(prefix + ".2.weight").values.begin(), w.at(prefix + ".2.weight").values.end(), 0.0f);
      std::fill(w.at(prefix + ".2.bias").values.begin(), w.at(prefix + ".2.bias").values.end(), 0.0f);
    }
  };
  init_norms(w);
  if (config.variant == StudentVariant::MlpAttention) init_mlp("mlp");

  if (init == StudentInit::Random) {
    torch_linear_init(w, "input_proj", rng);
    const float key_std = 1.0f / std::sqrt(static_cast<float>(d));
    for (std::size_t b = 0; b < config.layers; ++b) {
      const std::string p = block_prefix(b);
      fill_normal(w.at(p + "keys").values, key_std, rng);
      fill_normal(w.at(p + "values").values, key_std, rng);
      // nn.MultiheadAttention: xavier_uniform_ over the stacked (3d x d) matrix, zero biases.
      const float bound = std::sqrt(6.0f / static_cast<float>(4 * d));
      std::uniform_real_distribution<float> u(-bound, bound);
      for (float& v : w.at(p + "attention.in_proj_weight").values) v = u(rng);
      torch_linear_init(w, p + "attention.out_proj", rng);
      std::fill(w.at(p + "attention.out_proj.bias").values.begin(),
                w.at(p + "attention.out_proj.bias").values.end(), 0.0f);
      if (config.variant == StudentVariant::Block) init_mlp(p + "ffn");
    }
    return w;
  }

  set_identity(w.at("input_proj.weight"), 1.0f);
  Matrix keys, values;
  teacher_keys(groups, m, keys, values);
  // Every head computes the teacher's logits cos(q, key)/tau on the keys'
  // principal subspace: (a P q) . (b P k) / sqrt(hd) = q.k / tau with
  // a = b = (sqrt(hd)/tau)^(1/2). Values pass through unchanged.
  const Matrix basis = key_subspace(keys, hd);
  const float gain = std::sqrt(std::sqrt(static_cast<float>(hd)) / teacher.temperature());
  for (std::size_t b = 0; b < config.layers; ++b) {
    const std::string p = block_prefix(b);
    StudentTensor& in_proj = w.at(p + "attention.in_proj_weight");
    if (b == 0) {
      w.at("keys").values = keys.data;
      w.at("values").values = values.data;
      for (std::size_t h = 0; h < config.num_heads; ++h) {
        for (std::size_t r = 0; r < hd; ++r) {
          for (std::size_t j = 0; j < d; ++j) {
            in_proj.values[(h * hd + r) * d + j] = gain * basis(r, j);          // query
            in_proj.values[(d + h * hd + r) * d + j] = gain * basis(r, j);      // key
          }
        }
      }
      for (std::size_t i = 0; i < d; ++i) in_proj.values[(2 * d + i) * d + i] = 1.0f;  // value
      set_attention_gain(w, kDefaultAttentionGain);
    } else {
      // Later blocks start as the identity (their attention output is zero)
      // with keys and values where the first block's are.
      w.at(p + "keys").values = keys.data;
      w.at(p + "values").values = values.data;
      const float bound = std::sqrt(6.0f / static_cast<float>(4 * d));
      std::uniform_real_distribution<float> u(-bound, bound);
      for (float& v : in_proj.values) v = u(rng);
    }
    if (config.variant == StudentVariant::Block) init_mlp(p + "ffn");
  }
  return w;
}

}  // namespace ldaproj
