// libtorch forward of the BERT encoder (see torch_bert.hpp); checked against
// ldaproj::Encoder in tests/fine_tune_test.cpp.
#include "embed/torch_bert.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "embed/model_config.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/safetensors.hpp"

namespace ldaproj::detail {

namespace {

// Length-sorted batches keep padding small when every text is encoded once.
constexpr std::size_t kEncodeBatch = 128;

std::vector<std::int64_t> rows_by_length(const std::vector<std::size_t>& lengths) {
  std::vector<std::int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return lengths[a] < lengths[b]; });
  return order;
}

torch::Tensor padded_ids(const std::vector<std::vector<std::int32_t>>& ids, const std::vector<std::int64_t>& rows,
                         torch::Tensor& mask) {
  std::size_t tokens = 0;
  for (std::int64_t r : rows) tokens = std::max(tokens, ids[r].size());
  const auto batch = static_cast<std::int64_t>(rows.size());
  torch::Tensor out = torch::zeros({batch, static_cast<std::int64_t>(tokens)}, torch::kLong);
  mask = torch::zeros({batch, static_cast<std::int64_t>(tokens)}, torch::kFloat32);
  auto o = out.accessor<std::int64_t, 2>();
  auto m = mask.accessor<float, 2>();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& seq = ids[rows[i]];
    for (std::size_t j = 0; j < seq.size(); ++j) {
      o[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(j)] = seq[j];
      m[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(j)] = 1.0f;
    }
  }
  return out;
}

}  // namespace

std::vector<torch::Tensor*> TorchBertLayer::tensors() {
  return {&wq, &bq, &wk, &bk, &wv, &bv, &wo, &bo, &ln1_g, &ln1_b, &wi, &bi, &wout, &bout, &ln2_g, &ln2_b};
}

std::vector<const torch::Tensor*> TorchBertLayer::tensors() const {
  return {&wq, &bq, &wk, &bk, &wv, &bv, &wo, &bo, &ln1_g, &ln1_b, &wi, &bi, &wout, &bout, &ln2_g, &ln2_b};
}

std::vector<std::string> TorchBertLayer::tensor_names(const std::string& prefix, std::size_t index) {
  const std::string p = prefix + "encoder.layer." + std::to_string(index) + ".";
  std::vector<std::string> names;
  for (const char* part : {"attention.self.query", "attention.self.key", "attention.self.value",
                           "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                           "output.dense", "output.LayerNorm"}) {
    names.push_back(p + part + ".weight");
    names.push_back(p + part + ".bias");
  }
  return names;
}

TorchBertLayer TorchBertLayer::trainable_copy() const {
  TorchBertLayer copy = *this;
  for (torch::Tensor* t : copy.tensors()) *t = t->detach().clone().set_requires_grad(true);
  return copy;
}

TorchBertLayer TorchBertLayer::snapshot() const {
  TorchBertLayer copy = *this;
  for (torch::Tensor* t : copy.tensors()) *t = t->detach().clone();
  return copy;
}

TorchBert load_torch_bert(const std::filesystem::path& model_dir) {
  const std::string cfg_file = (model_dir / "config.json").string();
  const nlohmann::json cfg = read_model_config(model_dir);
  TorchBert bert;
  if (!cfg.contains("num_attention_heads") || !cfg["num_attention_heads"].is_number_unsigned() ||
      !cfg.contains("num_hidden_layers") || !cfg["num_hidden_layers"].is_number_unsigned()) {
    throw InputError(cfg_file + ": needs num_attention_heads and num_hidden_layers");
  }
  bert.heads = cfg["num_attention_heads"].get<std::int64_t>();
  const auto layer_count = cfg["num_hidden_layers"].get<std::size_t>();
  if (cfg.contains("layer_norm_eps") && cfg["layer_norm_eps"].is_number()) {
    bert.layer_norm_eps = cfg["layer_norm_eps"].get<double>();
  }

  const auto file = SafeTensorsFile::open(model_weights_file(model_dir));
  bert.prefix = file.contains("bert.embeddings.word_embeddings.weight") ? "bert." : "";
  auto load = [&](const std::string& name) {
    const TensorInfo& info = file.info(name);
    std::vector<float> values = file.load_f32(name);
    return torch::from_blob(values.data(), info.shape, torch::kFloat32).clone();
  };
  const std::string e = bert.prefix + "embeddings.";
  bert.word = load(e + "word_embeddings.weight");
  bert.position = load(e + "position_embeddings.weight");
  bert.token_type0 = load(e + "token_type_embeddings.weight")[0].clone();
  bert.emb_g = load(e + "LayerNorm.weight");
  bert.emb_b = load(e + "LayerNorm.bias");
  bert.hidden = bert.word.size(1);
  if (bert.heads <= 0 || bert.hidden % bert.heads != 0) {
    throw InputError(cfg_file + ": num_attention_heads must divide the hidden size " + std::to_string(bert.hidden));
  }
  for (std::size_t i = 0; i < layer_count; ++i) {
    TorchBertLayer layer;
    const auto names = TorchBertLayer::tensor_names(bert.prefix, i);
    const auto slots = layer.tensors();
    for (std::size_t t = 0; t < names.size(); ++t) *slots[t] = load(names[t]);
    bert.layers.push_back(std::move(layer));
  }
  return bert;
}

torch::Tensor bert_layer_forward(const TorchBert& bert, const TorchBertLayer& l, const torch::Tensor& x,
                                 const torch::Tensor& mask, double dropout, bool training) {
  const std::int64_t batch = x.size(0), tokens = x.size(1), head_dim = bert.hidden / bert.heads;
  auto split_heads = [&](const torch::Tensor& y) {
    return y.view({batch, tokens, bert.heads, head_dim}).transpose(1, 2);
  };
  const torch::Tensor q = split_heads(torch::linear(x, l.wq, l.bq));
  const torch::Tensor k = split_heads(torch::linear(x, l.wk, l.bk));
  const torch::Tensor v = split_heads(torch::linear(x, l.wv, l.bv));
  torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_dim));
  scores = scores + ((1.0 - mask) * -1e9).view({batch, 1, 1, tokens});
  const torch::Tensor probs = torch::dropout(torch::softmax(scores, -1), dropout, training);
  const torch::Tensor context = torch::matmul(probs, v).transpose(1, 2).reshape({batch, tokens, bert.hidden});
  const torch::Tensor attention = torch::dropout(torch::linear(context, l.wo, l.bo), dropout, training);
  const torch::Tensor h = torch::layer_norm(attention + x, {bert.hidden}, l.ln1_g, l.ln1_b, bert.layer_norm_eps);
  const torch::Tensor ffn =
      torch::dropout(torch::linear(torch::gelu(torch::linear(h, l.wi, l.bi)), l.wout, l.bout), dropout, training);
  return torch::layer_norm(ffn + h, {bert.hidden}, l.ln2_g, l.ln2_b, bert.layer_norm_eps);
}

torch::Tensor unit_rows(const torch::Tensor& t) { return t / t.norm(2, {1}, true).clamp_min(1e-12); }

std::vector<torch::Tensor> bert_prefix_states(const TorchBert& bert, const std::vector<std::vector<std::int32_t>>& ids,
                                              std::size_t layers) {
  torch::NoGradGuard no_grad;
  std::vector<std::size_t> lengths;
  for (const auto& seq : ids) {
    if (seq.empty() || static_cast<std::int64_t>(seq.size()) > bert.position.size(0)) {
      throw InputError("a text has " + std::to_string(seq.size()) + " tokens; the model takes 1.." +
                       std::to_string(bert.position.size(0)));
    }
    lengths.push_back(seq.size());
  }
  const auto order = rows_by_length(lengths);
  std::vector<torch::Tensor> out(ids.size());
  for (std::size_t begin = 0; begin < order.size(); begin += kEncodeBatch) {
    const std::vector<std::int64_t> rows(order.begin() + static_cast<std::ptrdiff_t>(begin),
                                         order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), begin + kEncodeBatch)));
    torch::Tensor mask;
    const torch::Tensor token_ids = padded_ids(ids, rows, mask);
    const std::int64_t tokens = token_ids.size(1);
    torch::Tensor x = bert.word.index_select(0, token_ids.reshape({-1})).reshape({token_ids.size(0), tokens, bert.hidden});
    x = x + bert.position.slice(0, 0, tokens).unsqueeze(0) + bert.token_type0;
    x = torch::layer_norm(x, {bert.hidden}, bert.emb_g, bert.emb_b, bert.layer_norm_eps);
    for (std::size_t l = 0; l < layers; ++l) x = bert_layer_forward(bert, bert.layers[l], x, mask, 0.0, false);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      out[rows[i]] = x[static_cast<std::int64_t>(i)].slice(0, 0, static_cast<std::int64_t>(lengths[rows[i]])).clone();
    }
  }
  return out;
}

torch::Tensor encode_from_states(const TorchBert& bert, const std::vector<torch::Tensor>& states,
                                 const std::vector<std::int64_t>& rows, const std::vector<TorchBertLayer>& layers,
                                 double dropout, bool training) {
  std::vector<torch::Tensor> seqs;
  seqs.reserve(rows.size());
  for (std::int64_t r : rows) seqs.push_back(states[r]);
  torch::Tensor x = torch::nn::utils::rnn::pad_sequence(seqs, /*batch_first=*/true);
  torch::Tensor mask = torch::zeros({x.size(0), x.size(1)}, torch::kFloat32);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    mask[static_cast<std::int64_t>(i)].slice(0, 0, seqs[i].size(0)).fill_(1.0f);
  }
  for (const TorchBertLayer& l : layers) x = bert_layer_forward(bert, l, x, mask, dropout, training);
  return unit_rows((x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, true));
}

torch::Tensor encode_all_states(const TorchBert& bert, const std::vector<torch::Tensor>& states,
                                const std::vector<TorchBertLayer>& layers) {
  torch::NoGradGuard no_grad;
  std::vector<std::size_t> lengths;
  for (const auto& s : states) lengths.push_back(static_cast<std::size_t>(s.size(0)));
  const auto order = rows_by_length(lengths);
  torch::Tensor out = torch::empty({static_cast<std::int64_t>(states.size()), bert.hidden});
  for (std::size_t begin = 0; begin < order.size(); begin += kEncodeBatch) {
    const std::vector<std::int64_t> rows(order.begin() + static_cast<std::ptrdiff_t>(begin),
                                         order.begin() + static_cast<std::ptrdiff_t>(std::min(order.size(), begin + kEncodeBatch)));
    out.index_put_({torch::tensor(rows)}, encode_from_states(bert, states, rows, layers, 0.0, false));
  }
  return out;
}

}  // namespace ldaproj::detail
