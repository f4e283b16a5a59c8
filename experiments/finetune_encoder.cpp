// Prototype (issue 9), not product code: does fine-tuning the last k layers of
// the sentence encoder, together with one unit key per intent, lift CLINC150
// intent accuracy above the frozen encoder with learned keys?
//
// The BERT forward is the library's libtorch one (src/embed/torch_bert.hpp,
// the same as `ldaproj finetune-encoder` uses); a parity check against
// ldaproj::Encoder runs first. Layers 1..6-k stay frozen and run once; their
// output is cached and only the last k layers and the keys are trained
// (cross-entropy of softmax(cos(q, key)/tau) over the intents, AdamW,
// mini-batches). Every choice (lr, tau, epoch) is
// made on val; test is evaluated once, for the val-chosen setting only.
//
// Build:  nice cmake -S . -B build -DLDAPROJ_BUILD_EXPERIMENTS=ON && nice cmake --build build --target finetune_encoder -j2
// Run:    nice ./build/finetune_encoder --layers 1 --layer-lrs 2e-5,5e-5,1e-4 --epochs 8
//         (--help lists the options; experiments/FINETUNE.md has the commands behind the numbers)
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "embed/torch_bert.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/safetensors.hpp"
#include "ldaproj/tokenizer.hpp"

namespace {

constexpr int kLayers = 6;
using ldaproj::detail::TorchBert;
using Layer = ldaproj::detail::TorchBertLayer;

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<double> parse_list(const std::string& s) {
  std::vector<double> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stod(item));
  return out;
}

struct Options {
  std::string data = "/work/shared/datasets/clinc150/data_full.json";
  std::string answers = "bench/data/clinc150_answers.jsonl";
  std::string model;  // empty: the bundled model
  int layers = 1;     // k: how many of the last layers are trained (0 = keys only)
  std::vector<double> layer_lrs = {5e-5};
  std::vector<double> key_lrs = {1e-3};
  std::vector<double> taus = {0.05};
  double weight_decay = 0.01;
  double dropout = 0.1;
  int epochs = 6;
  int batch = 64;
  int seed = 1;
  int parity_texts = 300;
  bool project_baseline = false;  // k = 0 with the project's recipe (full-batch Adam, 200 epochs)
  bool test = true;               // evaluate test for the val-chosen setting
  // Best val key R@1 of earlier runs: test is evaluated only if this run's chosen setting beats it on
  // val (otherwise an earlier run's setting stays the val-chosen one and test is not looked at again).
  double val_to_beat = -1;
};

struct Split {
  std::vector<std::vector<std::int32_t>> ids;
  std::vector<std::int64_t> label;
  std::vector<std::string> text;
  std::vector<torch::Tensor> cached;  // hidden states entering the first trained layer
};

struct Scores {
  double key_r1 = 0;      // argmax cos(q, key) = intent accuracy
  double teacher_r1 = 0;  // the teacher's answer ranking: p = softmax(cos/tau) . answers, rank by cos(p, a)
};

Scores score(const torch::Tensor& q, const torch::Tensor& labels, const torch::Tensor& unit_keys,
             const torch::Tensor& answers, double tau) {
  torch::NoGradGuard no_grad;
  const torch::Tensor cos = torch::matmul(q, unit_keys.t());
  Scores s;
  s.key_r1 = 100.0 * cos.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
  const torch::Tensor p = torch::matmul(torch::softmax(cos / tau, 1), answers);
  const torch::Tensor by_answer = torch::matmul(p, answers.t());  // |p| is the same for all answers
  s.teacher_r1 = 100.0 * by_answer.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
  return s;
}

torch::Tensor unit(const torch::Tensor& t) {
  return torch::nn::functional::normalize(t, torch::nn::functional::NormalizeFuncOptions().dim(1));
}

struct RunResult {
  double layer_lr = 0, key_lr = 0, tau = 0;
  int best_epoch = 0;
  Scores best_val;
  std::vector<Layer> best_layers;
  torch::Tensor best_keys;  // unit
  double seconds_per_epoch = 0;
};

void print_usage() {
  std::puts(
      "finetune_encoder [options]\n"
      "  --data PATH          CLINC150 data_full.json\n"
      "  --answers PATH       bench/data/clinc150_answers.jsonl (for the teacher's answer ranking)\n"
      "  --model DIR          model directory (default: the bundled all-MiniLM-L6-v2)\n"
      "  --layers K           last K layers trained (0 = keys only, mini-batch AdamW)\n"
      "  --project-baseline   K = 0 with the project's recipe: full-batch Adam lr 0.002, 200 epochs\n"
      "  --layer-lrs L,...    AdamW rates of the layers (swept)\n"
      "  --key-lrs L,...      AdamW rates of the keys (swept)\n"
      "  --taus T,...         softmax temperatures (swept)\n"
      "  --epochs N  --batch B  --dropout P  --weight-decay W  --seed S\n"
      "  --parity-texts N     texts compared with ldaproj::Encoder first (0 = skip)\n"
      "  --no-test            never evaluate test\n"
      "  --val-to-beat V      evaluate test only if the chosen val key R@1 exceeds V (best of earlier runs)");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--data") o.data = next();
    else if (a == "--answers") o.answers = next();
    else if (a == "--model") o.model = next();
    else if (a == "--layers") o.layers = std::stoi(next());
    else if (a == "--layer-lrs") o.layer_lrs = parse_list(next());
    else if (a == "--key-lrs") o.key_lrs = parse_list(next());
    else if (a == "--taus") o.taus = parse_list(next());
    else if (a == "--epochs") o.epochs = std::stoi(next());
    else if (a == "--batch") o.batch = std::stoi(next());
    else if (a == "--dropout") o.dropout = std::stod(next());
    else if (a == "--weight-decay") o.weight_decay = std::stod(next());
    else if (a == "--seed") o.seed = std::stoi(next());
    else if (a == "--parity-texts") o.parity_texts = std::stoi(next());
    else if (a == "--project-baseline") o.project_baseline = true;
    else if (a == "--no-test") o.test = false;
    else if (a == "--val-to-beat") o.val_to_beat = std::stod(next());
    else if (a == "--help" || a == "-h") print_usage(), std::exit(0);
    else throw std::runtime_error("unknown option " + a + " (see --help)");
  }
  if (o.layers < 0 || o.layers > kLayers) throw std::runtime_error("--layers must be 0..6");
  return o;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options opt = parse(argc, argv);
  torch::set_num_threads(2);
  torch::manual_seed(opt.seed);
  const auto model_dir = ldaproj::resolve_model_dir(opt.model);
  const auto tokenizer = ldaproj::Tokenizer::from_file(model_dir / "tokenizer.json");
  const TorchBert bert = ldaproj::detail::load_torch_bert(model_dir);

  // Data: in-scope queries only; intents numbered in sorted order.
  nlohmann::json data;
  {
    std::ifstream in(opt.data);
    if (!in) throw std::runtime_error("cannot read " + opt.data);
    data = nlohmann::json::parse(in);
  }
  std::map<std::string, std::int64_t> intent;
  for (const auto& row : data["train"]) intent.emplace(row[1].get<std::string>(), 0);
  std::int64_t next_id = 0;
  for (auto& [name, id] : intent) id = next_id++;
  const std::int64_t n_intents = next_id;
  auto read_split = [&](const char* name) {
    Split s;
    for (const auto& row : data[name]) {
      s.text.push_back(row[0].get<std::string>());
      s.label.push_back(intent.at(row[1].get<std::string>()));
      s.ids.push_back(tokenizer.encode(s.text.back(), 256));
    }
    return s;
  };
  Split train = read_split("train"), val = read_split("val"), test = read_split("test");
  Split answers;
  answers.ids.resize(std::size_t(n_intents));
  answers.text.resize(std::size_t(n_intents));
  {
    std::ifstream in(opt.answers);
    if (!in) throw std::runtime_error("cannot read " + opt.answers);
    std::string line;
    std::size_t found = 0;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const auto rec = nlohmann::json::parse(line);
      const auto id = std::size_t(intent.at(rec["cluster"].get<std::string>()));
      answers.text[id] = rec["answer"].get<std::string>();
      answers.ids[id] = tokenizer.encode(answers.text[id], 256);
      ++found;
    }
    if (found != std::size_t(n_intents)) throw std::runtime_error(opt.answers + ": not one answer per intent");
  }
  std::printf("intents %lld, train %zu, val %zu, test %zu\n", (long long)n_intents, train.ids.size(),
              val.ids.size(), test.ids.size());

  // Parity with the native encoder (fp32): the torch forward of all 6 layers.
  if (opt.parity_texts > 0) {
    const auto t0 = Clock::now();
    ldaproj::EncoderOptions eo;
    eo.threads = 2;
    const auto native = ldaproj::Encoder::load(model_dir, eo);
    Split probe;
    for (int i = 0; i < opt.parity_texts; ++i) {
      // Val queries of every intent plus the (longer) answers.
      const bool answer = i % 5 == 4 && std::size_t(i / 5) < answers.text.size();
      const std::string& t = answer ? answers.text[std::size_t(i / 5)] : val.text[std::size_t(i * 7) % val.text.size()];
      probe.text.push_back(t);
      probe.ids.push_back(tokenizer.encode(t, 256));
    }
    probe.cached = ldaproj::detail::bert_prefix_states(bert, probe.ids, 0);
    const torch::Tensor mine = ldaproj::detail::encode_all_states(bert, probe.cached, bert.layers);
    const ldaproj::Matrix theirs = native.encode(probe.text);
    const torch::Tensor ref =
        torch::from_blob(const_cast<float*>(theirs.data.data()), {std::int64_t(theirs.rows), bert.hidden}).clone();
    const torch::Tensor cos = (mine * ref).sum(1);
    std::printf("parity with ldaproj::Encoder on %d texts: min cosine %.7f, mean %.7f (%.1f s)\n", opt.parity_texts,
                cos.min().item<double>(), cos.mean().item<double>(), seconds_since(t0));
    if (cos.min().item<double>() < 0.9999) throw std::runtime_error("parity check failed (min cosine < 0.9999)");
  }

  // Cache the frozen prefix.
  const int frozen = kLayers - opt.layers;
  const auto t_cache = Clock::now();
  for (Split* s : {&train, &val, &test, &answers}) s->cached = ldaproj::detail::bert_prefix_states(bert, s->ids, frozen);
  std::printf("frozen layers 1..%d cached for %zu texts in %.1f s\n", frozen,
              train.ids.size() + val.ids.size() + test.ids.size() + answers.ids.size(), seconds_since(t_cache));
  const std::vector<Layer> pretrained(bert.layers.begin() + frozen, bert.layers.end());
  const torch::Tensor train_y = torch::tensor(train.label), val_y = torch::tensor(val.label),
                      test_y = torch::tensor(test.label);

  // Keys start at the unit centroids of the (pretrained) train embeddings.
  const torch::Tensor train_z0 = ldaproj::detail::encode_all_states(bert, train.cached, pretrained);
  const torch::Tensor centroids =
      unit(torch::zeros({n_intents, bert.hidden}).index_add_(0, train_y, train_z0));

  std::vector<RunResult> results;
  if (opt.project_baseline) {
    // ldaproj train --learn-keys: full-batch Adam (lr 0.002) on unit keys, mean cross-entropy.
    const torch::Tensor val_z = ldaproj::detail::encode_all_states(bert, val.cached, pretrained), answers_z = ldaproj::detail::encode_all_states(bert, answers.cached, pretrained);
    for (double tau : opt.taus) {
      torch::Tensor raw = centroids.clone().set_requires_grad(true);
      torch::optim::Adam adam({raw}, torch::optim::AdamOptions(0.002));
      RunResult r;
      r.tau = tau;
      r.key_lr = 0.002;
      const auto t0 = Clock::now();
      for (int epoch = 1; epoch <= opt.epochs; ++epoch) {
        adam.zero_grad();
        torch::nn::functional::cross_entropy(torch::matmul(train_z0, unit(raw).t()) / tau, train_y).backward();
        adam.step();
        if (epoch % 50 == 0 || epoch == opt.epochs) {
          const Scores v = score(val_z, val_y, unit(raw).detach(), answers_z, tau);
          std::printf("baseline tau %.3f epoch %d: val key R@1 %.2f, teacher R@1 %.2f\n", tau, epoch, v.key_r1,
                      v.teacher_r1);
        }
      }
      r.seconds_per_epoch = seconds_since(t0) / opt.epochs;
      r.best_epoch = opt.epochs;  // the project's setting, chosen on val by bench-quality
      r.best_val = score(val_z, val_y, unit(raw).detach(), answers_z, tau);
      r.best_keys = unit(raw).detach().clone();
      r.best_layers = pretrained;
      results.push_back(std::move(r));
    }
  } else {
    std::mt19937_64 rng(std::uint64_t(opt.seed));
    const std::int64_t m = std::int64_t(train.ids.size());
    const std::int64_t steps_per_epoch = (m + opt.batch - 1) / opt.batch;
    const std::int64_t total_steps = steps_per_epoch * opt.epochs, warmup = steps_per_epoch / 2;
    for (double tau : opt.taus)
      for (double key_lr : opt.key_lrs)
        for (double layer_lr : (opt.layers == 0 ? std::vector<double>{0.0} : opt.layer_lrs)) {
          torch::manual_seed(opt.seed);
          rng.seed(std::uint64_t(opt.seed));
          std::vector<Layer> layers;
          std::vector<torch::Tensor> layer_params;
          for (const Layer& l : pretrained) {
            layers.push_back(l.trainable_copy());
            for (torch::Tensor* t : layers.back().tensors()) layer_params.push_back(*t);
          }
          torch::Tensor raw = centroids.clone().set_requires_grad(true);
          std::vector<torch::optim::OptimizerParamGroup> groups;
          groups.emplace_back(std::vector<torch::Tensor>{raw},
                              std::make_unique<torch::optim::AdamWOptions>(
                                  torch::optim::AdamWOptions(key_lr).weight_decay(0.0)));
          if (!layer_params.empty()) {
            groups.emplace_back(layer_params, std::make_unique<torch::optim::AdamWOptions>(
                                                  torch::optim::AdamWOptions(layer_lr).weight_decay(opt.weight_decay)));
          }
          torch::optim::AdamW adamw(groups, torch::optim::AdamWOptions(key_lr));
          const std::vector<double> base_lr = {key_lr, layer_lr};
          RunResult r;
          r.layer_lr = layer_lr;
          r.key_lr = key_lr;
          r.tau = tau;
          r.best_val.key_r1 = -1;
          double train_seconds = 0;
          std::int64_t step = 0;
          for (int epoch = 1; epoch <= opt.epochs; ++epoch) {
            const auto t0 = Clock::now();
            std::vector<std::int64_t> perm(static_cast<std::size_t>(m));
            std::iota(perm.begin(), perm.end(), 0);
            std::shuffle(perm.begin(), perm.end(), rng);
            double loss_sum = 0;
            for (std::int64_t b = 0; b < steps_per_epoch; ++b) {
              // Linear warm-up over half an epoch, then linear decay to zero.
              const double f = step < warmup ? double(step + 1) / double(warmup)
                                             : double(total_steps - step) / double(total_steps - warmup);
              for (std::size_t g = 0; g < adamw.param_groups().size(); ++g) {
                static_cast<torch::optim::AdamWOptions&>(adamw.param_groups()[g].options()).lr(base_lr[g] * f);
              }
              ++step;
              const std::vector<std::int64_t> rows(perm.begin() + b * opt.batch,
                                                   perm.begin() + std::min(m, (b + 1) * opt.batch));
              const torch::Tensor z = ldaproj::detail::encode_from_states(bert, train.cached, rows, layers, opt.dropout, true);
              const torch::Tensor loss = torch::nn::functional::cross_entropy(
                  torch::matmul(z, unit(raw).t()) / tau, train_y.index_select(0, torch::tensor(rows)));
              adamw.zero_grad();
              loss.backward();
              adamw.step();
              loss_sum += loss.item<double>() * double(rows.size());
            }
            train_seconds += seconds_since(t0);
            const auto t_eval = Clock::now();
            const Scores v = score(ldaproj::detail::encode_all_states(bert, val.cached, layers), val_y, unit(raw).detach(),
                                   ldaproj::detail::encode_all_states(bert, answers.cached, layers), tau);
            std::printf("k %d tau %.3f key-lr %.0e layer-lr %.0e epoch %d: train loss %.4f, val key R@1 %.2f, "
                        "teacher R@1 %.2f (train %.1f s, val eval %.1f s)\n",
                        opt.layers, tau, key_lr, layer_lr, epoch, loss_sum / double(m), v.key_r1, v.teacher_r1,
                        seconds_since(t0) - seconds_since(t_eval), seconds_since(t_eval));
            std::fflush(stdout);
            if (v.key_r1 > r.best_val.key_r1) {  // ties keep the earlier epoch
              r.best_val = v;
              r.best_epoch = epoch;
              r.best_keys = unit(raw).detach().clone();
              r.best_layers.clear();
              for (const Layer& l : layers) r.best_layers.push_back(l.snapshot());
            }
          }
          r.seconds_per_epoch = train_seconds / opt.epochs;
          results.push_back(std::move(r));
        }
  }

  std::puts("\nval results (the setting with the best val key R@1 is chosen; ties keep the first):");
  std::size_t best = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const RunResult& r = results[i];
    std::printf("  k %d tau %.3f key-lr %.0e layer-lr %.0e: best epoch %d, val key R@1 %.2f, teacher R@1 %.2f, "
                "%.2f s/epoch\n",
                opt.layers, r.tau, r.key_lr, r.layer_lr, r.best_epoch, r.best_val.key_r1, r.best_val.teacher_r1,
                r.seconds_per_epoch);
    if (r.best_val.key_r1 > results[best].best_val.key_r1) best = i;
  }
  const RunResult& chosen = results[best];
  if (opt.test && chosen.best_val.key_r1 <= opt.val_to_beat) {
    std::printf("CHOSEN k %d tau %.3f key-lr %.0e layer-lr %.0e epoch %d: val key R@1 %.2f does not beat %.2f of an "
                "earlier run; test not evaluated\n",
                opt.layers, chosen.tau, chosen.key_lr, chosen.layer_lr, chosen.best_epoch, chosen.best_val.key_r1,
                opt.val_to_beat);
  } else if (opt.test) {
    const Scores t = score(ldaproj::detail::encode_all_states(bert, test.cached, chosen.best_layers), test_y, chosen.best_keys,
                           ldaproj::detail::encode_all_states(bert, answers.cached, chosen.best_layers), chosen.tau);
    std::printf("CHOSEN k %d tau %.3f key-lr %.0e layer-lr %.0e epoch %d: val key R@1 %.2f (teacher %.2f), "
                "test key R@1 %.2f (teacher %.2f)\n",
                opt.layers, chosen.tau, chosen.key_lr, chosen.layer_lr, chosen.best_epoch, chosen.best_val.key_r1,
                chosen.best_val.teacher_r1, t.key_r1, t.teacher_r1);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "finetune_encoder: %s\n", e.what());
  return 1;
}
