// The sentence encoder's BERT forward in libtorch, for training: the same
// weights, tokens, masking and mean pooling as ldaproj::Encoder, with autograd.
// Used by encoder fine-tuning (embed/fine_tune.cpp) and the experiments.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ldaproj::detail {

struct TorchBertLayer {
  torch::Tensor wq, bq, wk, bk, wv, bv, wo, bo, ln1_g, ln1_b, wi, bi, wout, bout, ln2_g, ln2_b;

  std::vector<torch::Tensor*> tensors();
  std::vector<const torch::Tensor*> tensors() const;
  // The safetensors names of tensors(), in the same order, for layer `index`.
  static std::vector<std::string> tensor_names(const std::string& prefix, std::size_t index);
  TorchBertLayer trainable_copy() const;  // detached copies that require grad
  TorchBertLayer snapshot() const;        // detached copies
};

struct TorchBert {
  std::int64_t hidden = 0, heads = 0;
  double layer_norm_eps = 1e-12;
  std::string prefix;  // "bert." when the weights carry it, else ""
  torch::Tensor word, position, token_type0, emb_g, emb_b;
  std::vector<TorchBertLayer> layers;
};

// Reads config.json and the weights of a model directory (as Encoder::load).
TorchBert load_torch_bert(const std::filesystem::path& model_dir);

// One transformer layer over x (batch x tokens x hidden); mask is batch x
// tokens with 1 for tokens and 0 for padding.
torch::Tensor bert_layer_forward(const TorchBert& bert, const TorchBertLayer& layer, const torch::Tensor& x,
                                 const torch::Tensor& mask, double dropout, bool training);

// Each row divided by its L2 norm (rows of zeros stay zero). Written out rather
// than torch::nn::functional::normalize, whose options struct makes GCC 12's
// ASan build warn (-Wmaybe-uninitialized) inside libtorch's headers.
torch::Tensor unit_rows(const torch::Tensor& t);

// Hidden states after the embeddings and the first `layers` layers, one
// (tokens x hidden) tensor per text, without gradients.
std::vector<torch::Tensor> bert_prefix_states(const TorchBert& bert, const std::vector<std::vector<std::int32_t>>& ids,
                                              std::size_t layers);

// Runs `layers` over the cached states of `rows` (padded into one batch),
// then mean pooling over the tokens and L2 normalisation: rows.size() x hidden.
torch::Tensor encode_from_states(const TorchBert& bert, const std::vector<torch::Tensor>& states,
                                 const std::vector<std::int64_t>& rows, const std::vector<TorchBertLayer>& layers,
                                 double dropout, bool training);

// encode_from_states over every cached text in length-sorted batches, without
// gradients and dropout; row i belongs to states[i].
torch::Tensor encode_all_states(const TorchBert& bert, const std::vector<torch::Tensor>& states,
                                const std::vector<TorchBertLayer>& layers);

}  // namespace ldaproj::detail
