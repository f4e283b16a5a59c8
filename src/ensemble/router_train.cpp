// The meta-router as a torch module (nn.Sequential(Linear, GELU, Linear)
// names), its loss on frozen student outputs and its training loop (AdamW,
// cosine LR, early stopping on the validation cosine of the sparse top-k mix);
// then the optional end-to-end fine-tuning of router and students together.
// GCC 12 with -fsanitize=address reports -Wmaybe-uninitialized inside libtorch's
// c10::optional<at::Generator> once uniform_() is inlined (the ASan build of
// `make test` failed on it); the diagnostic is about the header, not this file.
// Clang has no such warning (clang-tidy reports the unknown group).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "ensemble/router_train.hpp"
#include "ldaproj/error.hpp"
#include "student/transformer_module.hpp"

namespace ldaproj::ensemble_detail {

namespace {

torch::Tensor to_tensor(const Matrix& m) {
  return torch::from_blob(const_cast<float*>(m.data.data()),
                          {static_cast<std::int64_t>(m.rows), static_cast<std::int64_t>(m.cols)}, torch::kFloat32)
      .clone();
}

torch::Tensor to_tensor(const StudentTensor& t) {
  return torch::from_blob(const_cast<float*>(t.values.data()), t.shape, torch::kFloat32).clone();
}

// n x domains x dim.
torch::Tensor stack_outputs(const std::vector<Matrix>& outputs) {
  std::vector<torch::Tensor> parts;
  for (const Matrix& m : outputs) parts.push_back(to_tensor(m));
  return torch::stack(parts, 1);
}

struct Router {
  torch::Tensor w1, b1, w2, b2;

  explicit Router(const std::vector<StudentTensor>& tensors)
      : w1(to_tensor(tensors[0]).requires_grad_()),
        b1(to_tensor(tensors[1]).requires_grad_()),
        w2(to_tensor(tensors[2]).requires_grad_()),
        b2(to_tensor(tensors[3]).requires_grad_()) {}

  torch::Tensor logits(const torch::Tensor& x) const {
    namespace F = torch::nn::functional;
    return F::linear(torch::gelu(F::linear(x, w1, b1)), w2, b2);
  }

  std::vector<StudentTensor> tensors(const EnsembleConfig& config) const {
    std::vector<StudentTensor> out = initial_router(config, 0);
    const torch::Tensor* values[] = {&w1, &b1, &w2, &b2};
    for (std::size_t i = 0; i < out.size(); ++i) {
      const torch::Tensor c = values[i]->detach().contiguous();
      out[i].values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
    }
    return out;
  }
};

// MSE of a mix against the teacher plus kl_weight x KL(pooled || router), for
// both the router's training and the fine-tuning.
torch::Tensor mix_loss(const torch::Tensor& mix, const torch::Tensor& targets, const torch::Tensor& log_w,
                       const torch::Tensor& pooled, double kl_weight) {
  torch::Tensor loss = (mix - targets).pow(2).sum(1).mean();
  if (kl_weight > 0.0) {
    const torch::Tensor kl = (pooled * (torch::log(pooled.clamp_min(1e-12)) - log_w)).sum(1).mean();
    loss = loss + kl_weight * kl;
  }
  return loss;
}

// The router's loss on the dense mix of frozen student outputs.
torch::Tensor router_loss(const Router& router, const torch::Tensor& x, const torch::Tensor& outputs,
                          const torch::Tensor& targets, const torch::Tensor& pooled, double kl_weight) {
  const torch::Tensor log_w = torch::log_softmax(router.logits(x), 1);
  const torch::Tensor mix = (log_w.exp().unsqueeze(2) * outputs).sum(1);
  return mix_loss(mix, targets, log_w, pooled, kl_weight);
}

// Inference's sparse routing: the top-k domains by logit and their
// renormalised weights.
struct TopDomains {
  torch::Tensor weights, index;  // n x k each
};

TopDomains top_domains_of(const torch::Tensor& logits, std::size_t top_domains) {
  const auto k = static_cast<std::int64_t>(std::min<std::size_t>(top_domains, static_cast<std::size_t>(logits.size(1))));
  const auto [top, index] = logits.topk(k, 1);
  return {torch::softmax(top, 1), index};
}

// Mean cosine of the top-k renormalised mix against the teacher: what inference computes.
double sparse_mix_cosine(const Router& router, const torch::Tensor& x, const torch::Tensor& outputs,
                         const torch::Tensor& targets, std::size_t top_domains) {
  torch::NoGradGuard no_grad;
  const auto [w, index] = top_domains_of(router.logits(x), top_domains);
  const torch::Tensor chosen =
      outputs.gather(1, index.unsqueeze(2).expand({index.size(0), index.size(1), outputs.size(2)}));
  const torch::Tensor mix = (w.unsqueeze(2) * chosen).sum(1);
  return torch::cosine_similarity(mix, targets, 1).mean().item<double>();
}

using student_detail::ProjectionTransformer;
using Students = std::vector<std::shared_ptr<ProjectionTransformer>>;

// The top-k renormalised mix of the students, as inference computes it, with
// gradients to the router (through the kept weights) and to the students that
// ran; each student sees only the rows that chose its domain.
torch::Tensor sparse_student_mix(const Router& router, const Students& students, const torch::Tensor& x,
                                 std::size_t top_domains, torch::Tensor* log_weights = nullptr) {
  const torch::Tensor logits = router.logits(x);
  if (log_weights) *log_weights = torch::log_softmax(logits, 1);
  const auto [w, index] = top_domains_of(logits, top_domains);
  torch::Tensor mix = torch::zeros({x.size(0), x.size(1)}, x.options());
  for (std::size_t d = 0; d < students.size(); ++d) {
    const torch::Tensor chosen = index.eq(static_cast<std::int64_t>(d)).to(w.scalar_type());
    const torch::Tensor rows = chosen.sum(1).gt(0).nonzero().squeeze(1);
    if (rows.numel() == 0) continue;
    const torch::Tensor weight = (w * chosen).sum(1).index_select(0, rows);
    const torch::Tensor out = students[d]->forward(x.index_select(0, rows)).first;
    mix = mix.index_add(0, rows, out * weight.unsqueeze(1));
  }
  return mix;
}

double sparse_student_cosine(const Router& router, const Students& students, const torch::Tensor& x,
                             const torch::Tensor& targets, std::size_t top_domains) {
  torch::NoGradGuard no_grad;
  constexpr std::int64_t kSlice = 1024;
  double sum = 0.0;
  for (std::int64_t begin = 0; begin < x.size(0); begin += kSlice) {
    const torch::Tensor mix = sparse_student_mix(router, students, x.slice(0, begin, begin + kSlice), top_domains);
    sum += torch::cosine_similarity(mix, targets.slice(0, begin, begin + kSlice), 1).sum().item<double>();
  }
  return sum / static_cast<double>(std::max<std::int64_t>(1, x.size(0)));
}

// What the two training stages share: AdamW steps over shuffled minibatches
// with a cosine learning rate, one validation per epoch, and early stopping
// after `patience` epochs without a better validation cosine.
struct EpochLoop {
  const char* stage;  // for progress
  double lr;
  std::size_t epochs, batch_size, patience;
  std::uint64_t seed;
};

struct EpochLoopResult {
  std::size_t epochs_run = 0, best_epoch = 0;
  double best_cosine = 0.0;
};

EpochLoopResult run_epochs(torch::optim::AdamW& optimizer, std::int64_t n, const EpochLoop& loop,
                           double initial_cosine,
                           const std::function<torch::Tensor(const torch::Tensor& rows)>& batch_loss,
                           const std::function<double()>& validation_cosine, const std::function<void()>& keep_best,
                           const std::function<void(const EnsembleProgress&)>& progress) {
  EpochLoopResult result;
  result.best_cosine = initial_cosine;
  const auto batch = static_cast<std::int64_t>(std::max<std::size_t>(1, loop.batch_size));
  const std::int64_t steps_per_epoch = (n + batch - 1) / batch;
  const double total_steps = static_cast<double>(steps_per_epoch) * static_cast<double>(loop.epochs);
  torch::manual_seed(loop.seed);
  std::size_t since_best = 0;
  std::int64_t step = 0;
  for (std::size_t epoch = 1; epoch <= loop.epochs; ++epoch) {
    const torch::Tensor order = torch::randperm(n, torch::kInt64);
    double loss_sum = 0.0;
    for (std::int64_t begin = 0; begin < n; begin += batch, ++step) {
      const double lr = loop.lr * 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(step) / total_steps));
      for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      const torch::Tensor rows = order.slice(0, begin, std::min(n, begin + batch));
      optimizer.zero_grad();
      const torch::Tensor loss = batch_loss(rows);
      loss.backward();
      optimizer.step();
      loss_sum += loss.item<double>() * static_cast<double>(rows.size(0));
    }
    result.epochs_run = epoch;
    const double cosine = validation_cosine();
    if (progress) progress({loop.stage, 0, 0, epoch, loop.epochs, loss_sum / static_cast<double>(n)});
    if (cosine > result.best_cosine) {
      result.best_cosine = cosine;
      result.best_epoch = epoch;
      keep_best();
      since_best = 0;
    } else if (++since_best >= loop.patience) {
      break;
    }
  }
  return result;
}

}  // namespace

std::vector<StudentTensor> initial_router(const EnsembleConfig& c, std::uint64_t seed) {
  torch::manual_seed(seed);
  auto uniform = [](std::string name, std::vector<std::int64_t> shape, std::int64_t fan_in) {
    // nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    // rand() rather than uniform_(): GCC 12 warns (-Wmaybe-uninitialized) inside uniform_'s
    // optional-generator argument under the sanitizer build.
    const torch::Tensor t = ((torch::rand(shape, torch::kFloat32) * 2.0 - 1.0) * bound).contiguous();
    return StudentTensor{std::move(name), std::move(shape),
                         std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel())};
  };
  const auto d = static_cast<std::int64_t>(c.dim), h = static_cast<std::int64_t>(c.router_hidden),
             D = static_cast<std::int64_t>(c.domains);
  return {uniform("router.0.weight", {h, d}, d), uniform("router.0.bias", {h}, d),
          uniform("router.2.weight", {D, h}, h), uniform("router.2.bias", {D}, h)};
}

RouterResult train_router(const EnsembleWeights& weights, const RouterData& train, const RouterData& validation,
                          const EnsembleOptions& options,
                          const std::function<void(const EnsembleProgress&)>& progress) {
  const EnsembleConfig& config = weights.config;
  Router router(weights.router);
  const torch::Tensor x = to_tensor(train.inputs), outputs = stack_outputs(train.student_outputs),
                      targets = to_tensor(train.targets), pooled = to_tensor(train.pooled_routing);
  const torch::Tensor vx = to_tensor(validation.inputs), voutputs = stack_outputs(validation.student_outputs),
                      vtargets = to_tensor(validation.targets);

  RouterResult result;
  result.initial_cosine = sparse_mix_cosine(router, vx, voutputs, vtargets, config.top_domains);
  result.router = weights.router;

  torch::optim::AdamW optimizer({router.w1, router.b1, router.w2, router.b2},
                                torch::optim::AdamWOptions(options.router_lr).weight_decay(0.01));
  const EpochLoop loop{"router", options.router_lr, options.router_epochs, options.router_batch_size,
                       options.router_patience, options.seed + 1};
  const EpochLoopResult run = run_epochs(
      optimizer, x.size(0), loop, result.initial_cosine,
      [&](const torch::Tensor& rows) {
        return router_loss(router, x.index_select(0, rows), outputs.index_select(0, rows),
                           targets.index_select(0, rows), pooled.index_select(0, rows), options.router_kl_weight);
      },
      [&] { return sparse_mix_cosine(router, vx, voutputs, vtargets, config.top_domains); },
      [&] { result.router = router.tensors(config); }, progress);
  result.epochs_run = run.epochs_run;
  result.best_epoch = run.best_epoch;
  result.best_cosine = run.best_cosine;
  return result;
}

FineTuneResult fine_tune_ensemble(const EnsembleWeights& weights, const RouterData& train,
                                  const RouterData& validation, const EnsembleOptions& options,
                                  const std::function<void(const EnsembleProgress&)>& progress) {
  const EnsembleConfig& config = weights.config;
  Router router(weights.router);
  Students students;
  std::vector<torch::Tensor> parameters{router.w1, router.b1, router.w2, router.b2};
  for (const StudentWeights& s : weights.students) {
    students.push_back(std::make_shared<ProjectionTransformer>(s, torch::kFloat32));
    for (const torch::Tensor& p : students.back()->parameters()) parameters.push_back(p);
  }
  const torch::Tensor x = to_tensor(train.inputs), targets = to_tensor(train.targets),
                      pooled = to_tensor(train.pooled_routing);
  const torch::Tensor vx = to_tensor(validation.inputs), vtargets = to_tensor(validation.targets);

  FineTuneResult result;
  result.router = weights.router;
  result.students = weights.students;
  result.initial_cosine = sparse_student_cosine(router, students, vx, vtargets, config.top_domains);

  // No weight decay: the students' keys and values are the teacher's memory,
  // and the runs are short.
  torch::optim::AdamW optimizer(parameters, torch::optim::AdamWOptions(options.fine_tune_lr).weight_decay(0.0));
  const EpochLoop loop{"fine-tune", options.fine_tune_lr, options.fine_tune_epochs, options.router_batch_size,
                       options.router_patience, options.seed + 5};
  const EpochLoopResult run = run_epochs(
      optimizer, x.size(0), loop, result.initial_cosine,
      [&](const torch::Tensor& rows) {
        torch::Tensor log_w;
        const torch::Tensor mix = sparse_student_mix(router, students, x.index_select(0, rows), config.top_domains, &log_w);
        return mix_loss(mix, targets.index_select(0, rows), log_w, pooled.index_select(0, rows),
                        options.router_kl_weight);
      },
      [&] { return sparse_student_cosine(router, students, vx, vtargets, config.top_domains); },
      [&] {
        result.router = router.tensors(config);
        result.students.clear();
        for (const auto& s : students) result.students.push_back(s->weights());
      },
      progress);
  result.epochs_run = run.epochs_run;
  result.best_epoch = run.best_epoch;
  result.best_cosine = run.best_cosine;
  return result;
}

}  // namespace ldaproj::ensemble_detail

namespace ldaproj {

double ensemble_router_loss(const EnsembleWeights& weights, const Matrix& inputs,
                            const std::vector<Matrix>& student_outputs, const Matrix& targets,
                            const Matrix& pooled_routing, double kl_weight) {
  weights.validate("ensemble weights");
  if (student_outputs.size() != weights.config.domains) {
    throw InputError("ensemble_router_loss: one output matrix per domain is needed");
  }
  torch::NoGradGuard no_grad;
  const ensemble_detail::Router router(weights.router);
  return ensemble_detail::router_loss(router, ensemble_detail::to_tensor(inputs),
                                      ensemble_detail::stack_outputs(student_outputs),
                                      ensemble_detail::to_tensor(targets), ensemble_detail::to_tensor(pooled_routing),
                                      kl_weight)
      .item<double>();
}

}  // namespace ldaproj
