// The student as a libtorch module (ProjectionTransformer), shared by the
// student's distillation and the ensemble's end-to-end fine-tuning. Only
// translation units that train include this header (it pulls in torch).
#pragma once
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ldaproj/student.hpp"

namespace ldaproj::student_detail {

inline std::vector<float> to_values(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

inline std::string block_prefix(std::size_t b) { return b == 0 ? "" : "blocks." + std::to_string(b) + "."; }

// The student as a torch module. Parameters live in a tree of plain modules
// so that named_parameters() yields exactly the PyTorch names
// ("attention.out_proj.weight", "blocks.1.keys", ...); the forward reads them
// by name and spells out nn.MultiheadAttention for a single query token,
// projecting the learned keys and values once per call instead of once per
// query.
class ProjectionTransformer : public torch::nn::Module {
 public:
  ProjectionTransformer(const StudentWeights& weights, torch::Dtype dtype) : config_(weights.config) {
    weights.validate("student weights");
    for (const StudentTensor& t : weights.tensors) {
      const torch::Tensor value =
          torch::from_blob(const_cast<float*>(t.values.data()), t.shape, torch::kFloat32).to(dtype).clone();
      names_.push_back(t.name);
      params_.emplace(t.name, register_path(t.name, value));
    }
  }

  // (output, first block's attention averaged over heads)
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& queries) {
    const auto d = static_cast<std::int64_t>(config_.dim), heads = static_cast<std::int64_t>(config_.num_heads),
               hd = static_cast<std::int64_t>(config_.head_dim()), m = static_cast<std::int64_t>(config_.num_keys());
    const std::int64_t batch = queries.size(0);
    namespace F = torch::nn::functional;
    torch::Tensor x = F::linear(queries, p("input_proj.weight"), p("input_proj.bias"));
    if (config_.variant == StudentVariant::MlpAttention) x = x + mlp(x, "mlp");
    torch::Tensor pooled;
    for (std::size_t b = 0; b < config_.layers; ++b) {
      const std::string pre = block_prefix(b);
      const auto w = p(pre + "attention.in_proj_weight").chunk(3, 0);
      const auto bias = p(pre + "attention.in_proj_bias").chunk(3, 0);
      const torch::Tensor q = F::linear(x, w[0], bias[0]).view({batch, heads, hd}).transpose(0, 1);
      const torch::Tensor k = F::linear(p(pre + "keys"), w[1], bias[1]).view({m, heads, hd}).transpose(0, 1);
      const torch::Tensor v = F::linear(p(pre + "values"), w[2], bias[2]).view({m, heads, hd}).transpose(0, 1);
      const torch::Tensor scores = torch::bmm(q / std::sqrt(static_cast<double>(hd)), k.transpose(1, 2));
      const torch::Tensor attention = torch::softmax(scores, -1);  // heads x batch x m
      if (b == 0) pooled = attention.mean(0);
      const torch::Tensor mixed = torch::bmm(attention, v).transpose(0, 1).reshape({batch, d});
      x = x + F::linear(mixed, p(pre + "attention.out_proj.weight"), p(pre + "attention.out_proj.bias"));
      x = norm(x, pre + "norm1");
      if (config_.variant == StudentVariant::Block) x = norm(x + mlp(x, pre + "ffn"), pre + "norm2");
    }
    return {x, pooled};
  }

  StudentWeights weights() const {
    StudentWeights out{config_, {}};
    for (const auto& name : names_) {
      const torch::Tensor& t = params_.at(name);
      out.tensors.push_back({name, t.sizes().vec(), to_values(t)});
    }
    return out;
  }

  std::vector<StudentTensor> gradients() const {
    std::vector<StudentTensor> out;
    for (const auto& name : names_) {
      const torch::Tensor& t = params_.at(name);
      const torch::Tensor g = t.grad().defined() ? t.grad() : torch::zeros_like(t);
      out.push_back({name, t.sizes().vec(), to_values(g)});
    }
    return out;
  }

  const std::vector<std::string>& names() const { return names_; }
  const torch::Tensor& p(const std::string& name) const { return params_.at(name); }

 private:
  torch::Tensor mlp(const torch::Tensor& x, const std::string& prefix) const {
    namespace F = torch::nn::functional;
    return F::linear(torch::gelu(F::linear(x, p(prefix + ".0.weight"), p(prefix + ".0.bias"))),
                     p(prefix + ".2.weight"), p(prefix + ".2.bias"));
  }

  torch::Tensor norm(const torch::Tensor& x, const std::string& prefix) const {
    return torch::layer_norm(x, {static_cast<std::int64_t>(config_.dim)}, p(prefix + ".weight"),
                             p(prefix + ".bias"), config_.layer_norm_eps);
  }

  // Registers `value` as parameter "a.b.c" under child modules "a" then "b".
  torch::Tensor register_path(const std::string& dotted, const torch::Tensor& value) {
    torch::nn::Module* node = this;
    std::size_t start = 0;
    for (std::size_t dot = dotted.find('.'); dot != std::string::npos; dot = dotted.find('.', start)) {
      const std::string part = dotted.substr(start, dot - start);
      std::shared_ptr<torch::nn::Module> child;
      const auto children = node->named_children();
      if (const auto* found = children.find(part)) {
        child = *found;
      } else {
        child = node->register_module(part, std::make_shared<torch::nn::Module>(part));
      }
      node = child.get();
      start = dot + 1;
    }
    return node->register_parameter(dotted.substr(start), value);
  }

  StudentConfig config_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, torch::Tensor> params_;
};

}  // namespace ldaproj::student_detail
