// The libtorch side of the student: the distillation loss and the training
// loop (AdamW, LR schedule, early stopping) around the ProjectionTransformer
// module (student/transformer_module.hpp).
#include <cblas.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <thread>
#include <unordered_map>

#include "ldaproj/distill.hpp"
#include "ldaproj/error.hpp"
#include "student/transformer_module.hpp"

namespace ldaproj {

namespace {

using student_detail::ProjectionTransformer;

// Teacher outputs are computed in slices so that the (rows x heads) routing
// matrix stays small for large teachers.
constexpr std::size_t kTeacherChunk = 256;

torch::Tensor to_tensor(const Matrix& m, torch::Dtype dtype) {
  return torch::from_blob(const_cast<float*>(m.data.data()),
                          {static_cast<std::int64_t>(m.rows), static_cast<std::int64_t>(m.cols)}, torch::kFloat32)
      .to(dtype)
      .clone();
}

Matrix to_matrix(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
  Matrix m(static_cast<std::size_t>(c.size(0)), static_cast<std::size_t>(c.size(1)));
  std::copy(c.data_ptr<float>(), c.data_ptr<float>() + c.numel(), m.data.begin());
  return m;
}

struct LossTerms {
  torch::Tensor total, mse, cosine, kl, answer;
};

// What the answer term compares against: for each input, the teacher's top-k
// answers (indices into `answers`) and their scores a.t.
struct AnswerTargets {
  torch::Tensor answers;  // heads x dim
  torch::Tensor top;      // rows x k, int64
  torch::Tensor scores;   // rows x k

  bool defined() const { return answers.defined(); }
  AnswerTargets rows(const torch::Tensor& idx) const {
    return {answers, top.index_select(0, idx), scores.index_select(0, idx)};
  }
};

AnswerTargets answer_targets(const torch::Tensor& answers, const torch::Tensor& targets, std::size_t k) {
  torch::NoGradGuard no_grad;
  constexpr std::int64_t kSlice = 256;
  const std::int64_t take = std::min<std::int64_t>(static_cast<std::int64_t>(k), answers.size(0));
  std::vector<torch::Tensor> tops, scores;
  for (std::int64_t begin = 0; begin < targets.size(0); begin += kSlice) {
    const torch::Tensor all = torch::mm(targets.slice(0, begin, begin + kSlice), answers.t());
    const auto [values, indices] = all.topk(take, 1);
    tops.push_back(indices);
    scores.push_back(values);
  }
  return {answers, torch::cat(tops), torch::cat(scores)};
}

LossTerms loss_terms(ProjectionTransformer& net, const torch::Tensor& inputs, const torch::Tensor& targets,
                     const torch::Tensor& pooled_routing, const AnswerTargets& answer_targets,
                     const DistillOptions& o) {
  const auto [output, attention] = net.forward(inputs);
  LossTerms l;
  l.mse = (output - targets).pow(2).sum(1).mean();
  l.cosine = 1.0 - torch::cosine_similarity(output, targets, 1).mean();
  l.total = o.mse_weight * l.mse + o.cosine_weight * l.cosine;
  if (pooled_routing.defined() && pooled_routing.numel() > 0) {
    // KL(teacher || student); xlogy makes 0 log 0 = 0 for groups the teacher leaves empty.
    l.kl = (torch::xlogy(pooled_routing, pooled_routing) - pooled_routing * attention.clamp_min(1e-12).log())
               .sum(1)
               .mean();
    l.total = l.total + o.kl_weight * l.kl;
  } else {
    l.kl = torch::zeros({}, output.options());
  }
  if (answer_targets.defined()) {
    const torch::Tensor unit = output / output.norm(2, 1, true).clamp_min(1e-12);
    const std::int64_t batch = output.size(0), k = answer_targets.top.size(1);
    const torch::Tensor chosen =
        answer_targets.answers.index_select(0, answer_targets.top.reshape({-1})).view({batch, k, -1});
    const torch::Tensor scores = torch::bmm(chosen, unit.unsqueeze(2)).squeeze(2);
    l.answer = (scores - answer_targets.scores).pow(2).mean(1).mean();
    l.total = l.total + o.answer_weight * l.answer;
  } else {
    l.answer = torch::zeros({}, output.options());
  }
  return l;
}

// The teacher init's attention gain with the lowest loss on the validation
// inputs, from kAttentionGains (the first of equals).
float choose_attention_gain(const StudentWeights& initial, const torch::Tensor& inputs, const torch::Tensor& targets,
                            const torch::Tensor& routing, const AnswerTargets& answer, const DistillOptions& options,
                            torch::Dtype dtype) {
  torch::NoGradGuard no_grad;
  float best_gain = kDefaultAttentionGain;
  double best_loss = std::numeric_limits<double>::infinity();
  for (const float gain : kAttentionGains) {
    StudentWeights w = initial;
    set_attention_gain(w, gain);
    ProjectionTransformer net(w, dtype);
    const double loss = loss_terms(net, inputs, targets, routing, answer, options).total.item<double>();
    if (loss < best_loss) best_loss = loss, best_gain = gain;
  }
  return best_gain;
}

void check_options(const DistillOptions& o) {
  o.config.validate();
  auto bad = [](const std::string& what) { throw InputError(what); };
  if (o.epochs == 0 || o.epochs > 100000) bad("--epochs must be in 1..100000");
  if (o.batch_size == 0) bad("--batch-size must be positive");
  if (!(o.lr > 0.0) || !std::isfinite(o.lr)) bad("--lr must be a positive number");
  if (!(o.weight_decay >= 0.0) || !std::isfinite(o.weight_decay)) bad("--weight-decay must be >= 0");
  for (double w : {o.mse_weight, o.cosine_weight, o.kl_weight, o.answer_weight}) {
    if (!(w >= 0.0) || !std::isfinite(w)) {
      bad("loss weights (--mse-weight, --cosine-weight, --kl-weight, --answer-weight) must be >= 0");
    }
  }
  if (o.mse_weight + o.cosine_weight + o.kl_weight + o.answer_weight <= 0.0) {
    bad("at least one loss weight must be positive");
  }
  if (o.answer_weight > 0.0 && o.answer_top_k == 0) bad("--answer-top-k must be positive");
  if (o.threads < 0) bad("--threads must be >= 0");
  if (!(o.attention_gain >= 0.0f) || !std::isfinite(o.attention_gain)) {
    bad("--attention-gain must be a positive number, or 0 to choose it");
  }
  if (o.attention_gain > 0.0f && o.init != StudentInit::Teacher) bad("--attention-gain applies to --init teacher only");
  if (o.keys_only && o.init != StudentInit::Teacher) {
    bad("--keys-only needs --init teacher: with random init the frozen projections would stay random");
  }
}

std::string fixed_gain(float gain) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", double(gain));
  return buf;
}

int thread_count(int requested) {
  if (requested > 0) return requested;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Teacher projections (and pooled routing when groups > 0) in slices.
void teacher_outputs(const MultiHeadProjection& teacher, const Matrix& inputs,
                     const std::vector<std::size_t>& group_of_head, std::size_t groups, Matrix& targets,
                     Matrix& pooled) {
  targets = Matrix(inputs.rows, teacher.dim());
  pooled = Matrix(groups > 0 ? inputs.rows : 0, groups);
  for (std::size_t begin = 0; begin < inputs.rows; begin += kTeacherChunk) {
    const std::size_t end = std::min(inputs.rows, begin + kTeacherChunk);
    Matrix slice(end - begin, inputs.cols);
    std::copy(inputs.row(begin), inputs.row(begin) + slice.data.size(), slice.data.begin());
    Matrix routing;
    const Matrix projected = teacher.project(slice, teacher.temperature(), groups > 0 ? &routing : nullptr);
    std::copy(projected.data.begin(), projected.data.end(), targets.row(begin));
    if (groups > 0) {
      const Matrix p = pool_routing(routing, group_of_head, groups);
      std::copy(p.data.begin(), p.data.end(), pooled.row(begin));
    }
  }
}

double lr_at(const DistillOptions& o, std::size_t step, std::size_t total_steps, std::size_t epoch) {
  switch (o.schedule) {
    case LrSchedule::Cosine:
      return o.lr * 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(total_steps)));
    case LrSchedule::Step: {
      // x0.3 after each third of the epochs.
      const std::size_t third = std::max<std::size_t>(1, o.epochs / 3);
      const std::size_t thirds_done = epoch / third;  // whole thirds: the rate drops in steps
      return o.lr * std::pow(0.3, static_cast<double>(thirds_done));
    }
    case LrSchedule::Constant:
      return o.lr;
  }
  return o.lr;
}

}  // namespace

std::string_view to_string(LrSchedule schedule) {
  switch (schedule) {
    case LrSchedule::Cosine: return "cosine";
    case LrSchedule::Step: return "step";
    case LrSchedule::Constant: return "constant";
  }
  return "?";
}

LrSchedule parse_lr_schedule(std::string_view name) {
  if (name == "cosine") return LrSchedule::Cosine;
  if (name == "step") return LrSchedule::Step;
  if (name == "constant") return LrSchedule::Constant;
  throw InputError("unknown LR schedule \"" + std::string(name) + "\"; expected cosine, step or constant");
}

Matrix torch_student_forward(const StudentWeights& weights, const Matrix& queries, Matrix* attention) {
  if (queries.cols != weights.config.dim) {
    throw InputError("query embeddings have dimension " + std::to_string(queries.cols) + ", the student expects " +
                     std::to_string(weights.config.dim));
  }
  torch::NoGradGuard no_grad;
  ProjectionTransformer net(weights, torch::kFloat32);
  const auto [output, pooled] = net.forward(to_tensor(queries, torch::kFloat32));
  if (attention) *attention = to_matrix(pooled);
  return to_matrix(output);
}

StudentLoss torch_student_loss(const StudentWeights& weights, const Matrix& inputs, const Matrix& targets,
                               const Matrix& pooled_routing, const DistillOptions& options,
                               std::vector<StudentTensor>* gradients, bool double_precision, const Matrix& answers) {
  const torch::Dtype dtype = double_precision ? torch::kFloat64 : torch::kFloat32;
  ProjectionTransformer net(weights, dtype);
  const torch::Tensor routing = options.kl_weight > 0.0 ? to_tensor(pooled_routing, dtype) : torch::Tensor();
  const torch::Tensor t = to_tensor(targets, dtype);
  AnswerTargets answer;
  if (options.answer_weight > 0.0) {
    if (answers.cols != weights.config.dim || answers.rows == 0) {
      throw InputError("the answer term needs the teacher's answers (heads x " + std::to_string(weights.config.dim) + ")");
    }
    answer = answer_targets(to_tensor(answers, dtype), t, options.answer_top_k);
  }
  const LossTerms l = loss_terms(net, to_tensor(inputs, dtype), t, routing, answer, options);
  if (gradients) {
    l.total.backward();
    *gradients = net.gradients();
  }
  return {l.total.item<double>(), l.mse.item<double>(), l.cosine.item<double>(), l.kl.item<double>(),
          l.answer.item<double>()};
}

DistillReport distill_student(const MultiHeadProjection& teacher, const Matrix& questions,
                              const std::vector<std::size_t>& head_of_question, const DistillOptions& options,
                              const DistillObserver& observer) {
  check_options(options);
  const auto start = std::chrono::steady_clock::now();
  // The cores go to OpenBLAS, which does the matrix products (nearly all of
  // the work); torch's own OpenMP pool stays at one thread. Its workers
  // busy-wait between operations, and on a machine shared with other jobs
  // two of them made training 15-20x slower than one.
  torch::set_num_threads(1);
  openblas_set_num_threads(thread_count(options.threads));

  auto phase_start = std::chrono::steady_clock::now();
  auto phase_done = [&](const std::string& what) {
    const auto now = std::chrono::steady_clock::now();
    if (observer.on_phase) {
      char secs[32];
      std::snprintf(secs, sizeof secs, " (%.1fs)", std::chrono::duration<double>(now - phase_start).count());
      observer.on_phase(what + secs);
    }
    phase_start = now;
  };
  const DistillData data = make_distill_data(teacher, questions, head_of_question, options.data);
  phase_done("inputs: " + std::to_string(data.train_inputs.rows) + " to train on, " +
             std::to_string(data.validation_inputs.rows) + " to validate on");
  std::vector<std::size_t> group_of_head;
  StudentWeights initial = init_student(options.config, teacher, options.init, options.seed, &group_of_head);
  phase_done("student init (" + std::string(to_string(options.init)) + ", " +
             std::to_string(initial.parameter_count()) + " parameters)");
  const std::size_t groups = options.kl_weight > 0.0 ? options.config.num_keys() : 0;
  Matrix train_targets, train_routing, val_targets, val_routing;
  teacher_outputs(teacher, data.train_inputs, group_of_head, groups, train_targets, train_routing);
  teacher_outputs(teacher, data.validation_inputs, group_of_head, groups, val_targets, val_routing);
  phase_done("teacher targets over " + std::to_string(teacher.num_heads()) + " heads");
  // The teacher sets OpenBLAS to its own thread count (all cores unless
  // capped); training's many small products must go back to the requested
  // count, or --threads 1 trains with two spinning BLAS threads.
  openblas_set_num_threads(thread_count(options.threads));

  const torch::Dtype dtype = torch::kFloat32;
  const torch::Tensor x = to_tensor(data.train_inputs, dtype), t = to_tensor(train_targets, dtype);
  const torch::Tensor r = groups ? to_tensor(train_routing, dtype) : torch::Tensor();
  // Without held-out questions, early stopping watches the training inputs.
  const bool has_validation = data.validation_inputs.rows > 0;
  const torch::Tensor vx = has_validation ? to_tensor(data.validation_inputs, dtype) : x;
  const torch::Tensor vt = has_validation ? to_tensor(val_targets, dtype) : t;
  const torch::Tensor vr = groups ? (has_validation ? to_tensor(val_routing, dtype) : r) : torch::Tensor();
  AnswerTargets answer, val_answer;
  if (options.answer_weight > 0.0) {
    const torch::Tensor all_answers = to_tensor(teacher.answers(), dtype);
    answer = answer_targets(all_answers, t, options.answer_top_k);
    val_answer = has_validation ? answer_targets(all_answers, vt, options.answer_top_k) : answer;
    phase_done("answer targets (top " + std::to_string(options.answer_top_k) + " answers per input)");
  }

  float gain = 0.0f;
  if (options.init == StudentInit::Teacher) {
    gain = options.attention_gain > 0.0f ? options.attention_gain
                                         : choose_attention_gain(initial, vx, vt, vr, val_answer, options, dtype);
    set_attention_gain(initial, gain);
    phase_done("attention gain " + fixed_gain(gain));
  }

  ProjectionTransformer net(initial, dtype);
  // Weight decay on the weight matrices only; biases, norms and the learned
  // keys/values are left alone.
  std::vector<torch::Tensor> decayed, plain;
  for (const auto& name : net.names()) {
    const torch::Tensor& param = net.p(name);
    const bool is_bank = name.find("keys") != std::string::npos || name.find("values") != std::string::npos;
    if (options.keys_only && !is_bank) {
      param.requires_grad_(false);  // frozen: backward skips it instead of computing an unused gradient
      continue;
    }
    (param.dim() == 2 && !is_bank ? decayed : plain).push_back(param);
  }
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  param_groups.emplace_back(decayed, std::make_unique<torch::optim::AdamWOptions>(
                                         torch::optim::AdamWOptions(options.lr).weight_decay(options.weight_decay)));
  param_groups.emplace_back(plain, std::make_unique<torch::optim::AdamWOptions>(
                                       torch::optim::AdamWOptions(options.lr).weight_decay(0.0)));
  torch::optim::AdamW optimizer(std::move(param_groups), torch::optim::AdamWOptions(options.lr));

  auto evaluate = [&](double& loss, double& cosine) {
    torch::NoGradGuard no_grad;
    const LossTerms l = loss_terms(net, vx, vt, vr, val_answer, options);
    loss = l.total.item<double>();
    cosine = 1.0 - l.cosine.item<double>();
  };

  DistillReport report;
  report.train_samples = data.train_inputs.rows;
  report.validation_samples = data.validation_inputs.rows;
  report.validation_questions = data.validation_questions;
  report.per_source = data.per_source;
  double best_loss = 0.0, initial_cosine = 0.0;
  evaluate(best_loss, initial_cosine);
  report.initial_validation_cosine = initial_cosine;
  report.attention_gain = gain;
  report.weights = initial;

  const std::size_t n = data.train_inputs.rows;
  const std::size_t batches = (n + options.batch_size - 1) / options.batch_size;
  const std::size_t total_steps = batches * options.epochs;
  std::mt19937_64 rng(options.seed ^ 0x736875666c65ULL);
  std::vector<std::int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::size_t step = 0, stale = 0;
  net.train();
  for (std::size_t epoch = 0; epoch < options.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    const torch::Tensor perm = torch::from_blob(order.data(), {static_cast<std::int64_t>(n)}, torch::kInt64).clone();
    double loss_sum = 0.0;
    double lr = options.lr;
    for (std::size_t b = 0; b < batches; ++b, ++step) {
      lr = lr_at(options, step, total_steps, epoch);
      for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      const std::int64_t lo = static_cast<std::int64_t>(b * options.batch_size);
      const std::int64_t hi = static_cast<std::int64_t>(std::min(n, (b + 1) * options.batch_size));
      const torch::Tensor idx = perm.slice(0, lo, hi);
      const LossTerms l = loss_terms(net, x.index_select(0, idx), t.index_select(0, idx),
                                     groups ? r.index_select(0, idx) : torch::Tensor(),
                                     answer.defined() ? answer.rows(idx) : AnswerTargets{}, options);
      optimizer.zero_grad();
      l.total.backward();
      optimizer.step();
      loss_sum += l.total.item<double>();
      if (observer.on_batch) observer.on_batch({epoch + 1, options.epochs, b + 1, batches, loss_sum / double(b + 1)});
    }
    DistillEpoch e;
    e.epoch = epoch + 1;
    e.train_loss = loss_sum / double(batches);
    e.lr = lr;
    evaluate(e.validation_loss, e.validation_cosine);
    e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    e.improved = e.validation_loss < best_loss;
    if (e.improved) {
      best_loss = e.validation_loss;
      report.best_epoch = e.epoch;
      report.weights = net.weights();
      stale = 0;
    } else {
      ++stale;
    }
    report.history.push_back(e);
    if (observer.on_epoch) observer.on_epoch(e);
    if (options.patience > 0 && stale >= options.patience) {
      report.stopped_early = epoch + 1 < options.epochs;
      break;
    }
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace ldaproj
