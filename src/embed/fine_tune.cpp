// Encoder fine-tuning (ldaproj/fine_tune.hpp): the last layers of the torch
// BERT (embed/torch_bert.hpp) and one unit key per cluster are trained with
// cross-entropy of softmax(cos(q, key) / temperature); the frozen layers run
// once and their output is cached, so an epoch costs the trained layers only.
#include "ldaproj/fine_tune.hpp"

#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <thread>

#include "common/memory.hpp"
#include "embed/torch_bert.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/safetensors.hpp"
#include "ldaproj/tokenizer.hpp"

namespace ldaproj {

namespace {

namespace fs = std::filesystem;
using detail::TorchBert;
using detail::TorchBertLayer;
using detail::unit_rows;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void check_labels(const LabeledTexts& set, const char* what, std::size_t classes) {
  if (set.texts.size() != set.labels.size()) {
    throw InputError(std::string(what) + ": " + std::to_string(set.texts.size()) + " texts but " +
                     std::to_string(set.labels.size()) + " labels");
  }
  for (std::size_t i = 0; i < set.labels.size(); ++i) {
    if (set.labels[i] >= classes) {
      throw InputError(std::string(what) + " text " + std::to_string(i) + " has label " +
                       std::to_string(set.labels[i]) + " of " + std::to_string(classes) + " classes");
    }
  }
}

void check_options(const EncoderFineTuneOptions& o, std::size_t model_layers) {
  if (o.layers < 1 || o.layers > model_layers) {
    throw InputError("fine-tuning trains 1.." + std::to_string(model_layers) + " layers, not " +
                     std::to_string(o.layers));
  }
  if (o.epochs < 1) throw InputError("fine-tuning needs at least one epoch");
  if (o.batch_size < 1) throw InputError("the fine-tuning batch size must be positive");
  if (!(o.layer_lr > 0) || !(o.key_lr > 0)) throw InputError("the fine-tuning learning rates must be positive");
  if (!(o.temperature > 0)) throw InputError("the fine-tuning temperature must be positive");
  if (!(o.weight_decay >= 0)) throw InputError("the fine-tuning weight decay must not be negative");
  if (!(o.dropout >= 0 && o.dropout < 1)) throw InputError("the fine-tuning dropout must be in [0, 1)");
}

torch::Tensor labels_tensor(const LabeledTexts& set) {
  std::vector<std::int64_t> labels(set.labels.begin(), set.labels.end());
  return torch::tensor(labels, torch::kLong);
}

double key_accuracy(const torch::Tensor& embeddings, const torch::Tensor& labels, const torch::Tensor& unit_keys) {
  torch::NoGradGuard no_grad;
  return torch::matmul(embeddings, unit_keys.t()).argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
}

std::vector<std::vector<std::int32_t>> tokenize(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                                                std::size_t max_tokens) {
  std::vector<std::vector<std::int32_t>> ids;
  ids.reserve(texts.size());
  for (const std::string& text : texts) ids.push_back(tokenizer.encode(text, max_tokens));
  return ids;
}

nlohmann::json options_json(const EncoderFineTuneOptions& o) {
  return {{"layers", o.layers}, {"epochs", o.epochs}, {"batch_size", o.batch_size}, {"layer_lr", o.layer_lr},
          {"key_lr", o.key_lr}, {"temperature", o.temperature}, {"weight_decay", o.weight_decay},
          {"dropout", o.dropout}, {"seed", o.seed}};
}

// Every float tensor of the base weights, the trained layers replaced, as float32.
void write_weights(const fs::path& base_weights, const TorchBert& bert, const std::vector<TorchBertLayer>& trained,
                   const fs::path& out, const std::map<std::string, std::string>& metadata) {
  const auto base = SafeTensorsFile::open(base_weights);
  std::map<std::string, torch::Tensor> replaced;
  const std::size_t first = bert.layers.size() - trained.size();
  for (std::size_t i = 0; i < trained.size(); ++i) {
    const auto names = TorchBertLayer::tensor_names(bert.prefix, first + i);
    const auto tensors = trained[i].tensors();
    for (std::size_t t = 0; t < names.size(); ++t) replaced[names[t]] = tensors[t]->detach().contiguous();
  }
  std::vector<std::vector<float>> values;
  std::vector<TensorToWrite> to_write;
  values.reserve(base.tensors().size());
  for (const TensorInfo& info : base.tensors()) {
    if (info.dtype != DType::F32 && info.dtype != DType::F16 && info.dtype != DType::BF16) continue;
    const auto it = replaced.find(info.name);
    if (it == replaced.end()) {
      values.push_back(base.load_f32(info.name));
    } else {
      const float* p = it->second.data_ptr<float>();
      values.emplace_back(p, p + it->second.numel());
      replaced.erase(it);
    }
    to_write.push_back({info.name, info.shape, values.back()});
  }
  if (!replaced.empty()) {
    throw InputError(base_weights.string() + " has no tensor " + replaced.begin()->first);
  }
  write_safetensors(out, to_write, metadata);
}

}  // namespace

EncoderFineTuneReport fine_tune_encoder(const fs::path& base_model_dir, const LabeledTexts& train,
                                        const LabeledTexts& validation, const fs::path& out_dir,
                                        const EncoderFineTuneOptions& options,
                                        const std::function<void(const EncoderFineTuneEpoch&)>& on_epoch) {
  const auto started = Clock::now();
  const Encoder base = Encoder::load(base_model_dir);  // validates the directory and names the base model
  EncoderFineTuneReport report;
  report.base_model = base.model_name();
  const fs::path target = fs::weakly_canonical(fs::absolute(out_dir));
  report.model_name = target.filename().string();
  report.model_dir = target;
  if (report.model_name.empty()) throw InputError("the fine-tuned model's directory needs a name: " + out_dir.string());
  if (fs::exists(target)) {
    throw InputError(target.string() + " exists already; the fine-tuned model goes to a new directory");
  }
  if (report.model_name == report.base_model) {
    throw InputError("the fine-tuned model's directory must not be named " + report.base_model +
                     " like the base model: embeddings are stored under the directory's name");
  }
  if (train.classes < 2) throw InputError("fine-tuning needs at least two clusters");
  check_labels(train, "training", train.classes);
  check_labels(validation, "validation", train.classes);
  std::vector<std::size_t> per_class(train.classes, 0);
  for (std::size_t label : train.labels) ++per_class[label];
  for (std::size_t c = 0; c < train.classes; ++c) {
    if (per_class[c] == 0) throw InputError("training class " + std::to_string(c) + " has no text");
  }

  std::error_code parent_error;
  fs::create_directories(target.parent_path(), parent_error);
  if (parent_error) {
    throw InputError("cannot create " + target.parent_path().string() + " for the fine-tuned model: " +
                     parent_error.message());
  }

  const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
  torch::manual_seed(options.seed);
  std::mt19937_64 rng(options.seed);

  const TorchBert bert = detail::load_torch_bert(base_model_dir);
  check_options(options, bert.layers.size());
  const auto tokenizer = Tokenizer::from_file(base_model_dir / "tokenizer.json");
  const std::size_t max_tokens = base.options().max_tokens;
  const std::size_t frozen = bert.layers.size() - options.layers;
  const auto train_ids = tokenize(tokenizer, train.texts, max_tokens);
  const auto val_ids = tokenize(tokenizer, validation.texts, max_tokens);
  {
    // The frozen layers' output is cached per question token (float32): at
    // 274k questions that is gigabytes, so check before any work.
    std::size_t tokens = 0;
    for (const auto* ids : {&train_ids, &val_ids})
      for (const auto& seq : *ids) tokens += seq.size();
    const std::size_t need = tokens * static_cast<std::size_t>(bert.hidden) * sizeof(float) +
                             (train_ids.size() + val_ids.size()) * 512 +
                             train.classes * static_cast<std::size_t>(bert.hidden) * sizeof(float) * 8;
    const std::size_t available = detail::available_memory_bytes();
    if (available > 0 && need > available) {
      throw InputError("fine-tuning on " + std::to_string(train_ids.size()) + " questions (" + std::to_string(tokens) +
                       " tokens) caches the frozen layers' outputs in about " + detail::gigabytes(need) + " and " +
                       detail::gigabytes(available) + " is available; fine-tune on a store with fewer questions");
    }
  }
  const auto train_states = detail::bert_prefix_states(bert, train_ids, frozen);
  const auto val_states = detail::bert_prefix_states(bert, val_ids, frozen);
  const std::vector<TorchBertLayer> pretrained(bert.layers.begin() + static_cast<std::ptrdiff_t>(frozen), bert.layers.end());
  const torch::Tensor train_y = labels_tensor(train), val_y = labels_tensor(validation);
  const bool has_validation = !validation.texts.empty();

  const torch::Tensor centroids = unit_rows(torch::zeros({static_cast<std::int64_t>(train.classes), bert.hidden})
                                                .index_add_(0, train_y, detail::encode_all_states(bert, train_states, pretrained)));
  if (has_validation) {
    report.base_validation_accuracy = key_accuracy(detail::encode_all_states(bert, val_states, pretrained), val_y, centroids);
  }

  std::vector<TorchBertLayer> layers;
  std::vector<torch::Tensor> layer_weights;
  for (const TorchBertLayer& l : pretrained) {
    layers.push_back(l.trainable_copy());
    for (torch::Tensor* t : layers.back().tensors()) layer_weights.push_back(*t);
  }
  torch::Tensor keys = centroids.clone().set_requires_grad(true);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{keys},
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options.key_lr).weight_decay(0.0)));
  groups.emplace_back(layer_weights, std::make_unique<torch::optim::AdamWOptions>(
                                         torch::optim::AdamWOptions(options.layer_lr).weight_decay(options.weight_decay)));
  torch::optim::AdamW adamw(groups, torch::optim::AdamWOptions(options.key_lr));
  const double peak_lr[2] = {options.key_lr, options.layer_lr};

  const auto m = static_cast<std::int64_t>(train.texts.size());
  const auto batch = static_cast<std::int64_t>(options.batch_size);
  const std::int64_t steps_per_epoch = (m + batch - 1) / batch;
  const std::int64_t total_steps = steps_per_epoch * static_cast<std::int64_t>(options.epochs);
  const std::int64_t warmup = std::max<std::int64_t>(1, steps_per_epoch / 2);
  std::int64_t step = 0;
  double best_accuracy = -2;
  std::vector<TorchBertLayer> chosen;
  std::vector<std::int64_t> order(static_cast<std::size_t>(m));
  for (std::size_t epoch = 1; epoch <= options.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    double loss_sum = 0;
    for (std::int64_t b = 0; b < steps_per_epoch; ++b, ++step) {
      // Linear warm-up over half an epoch, then linear decay to zero.
      const double f = step < warmup ? static_cast<double>(step + 1) / static_cast<double>(warmup)
                                     : static_cast<double>(total_steps - step) /
                                           static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup));
      for (std::size_t g = 0; g < 2; ++g) {
        static_cast<torch::optim::AdamWOptions&>(adamw.param_groups()[g].options()).lr(peak_lr[g] * f);
      }
      const std::vector<std::int64_t> rows(order.begin() + b * batch, order.begin() + std::min(m, (b + 1) * batch));
      const torch::Tensor z = detail::encode_from_states(bert, train_states, rows, layers, options.dropout, true);
      const torch::Tensor loss = torch::nn::functional::cross_entropy(
          torch::matmul(z, unit_rows(keys).t()) / options.temperature, train_y.index_select(0, torch::tensor(rows)));
      adamw.zero_grad();
      loss.backward();
      adamw.step();
      loss_sum += loss.item<double>() * static_cast<double>(rows.size());
    }
    EncoderFineTuneEpoch e;
    e.epoch = epoch;
    e.train_loss = loss_sum / static_cast<double>(m);
    if (has_validation) {
      e.validation_accuracy = key_accuracy(detail::encode_all_states(bert, val_states, layers), val_y, unit_rows(keys).detach());
    }
    e.seconds = seconds_since(epoch_start);
    if (!std::isfinite(e.train_loss)) {
      throw Error("fine-tuning diverged in epoch " + std::to_string(epoch) + " (loss " + std::to_string(e.train_loss) +
                  "); try a smaller --lr");
    }
    report.epochs.push_back(e);
    if (on_epoch) on_epoch(e);
    // Without validation every epoch "improves", so the last one is kept.
    const double score = has_validation ? e.validation_accuracy : static_cast<double>(epoch);
    if (score > best_accuracy) {
      best_accuracy = score;
      report.chosen_epoch = epoch;
      chosen.clear();
      for (const TorchBertLayer& l : layers) chosen.push_back(l.snapshot());
    }
  }
  report.seconds = seconds_since(started);

  // Written beside the target, then renamed: the directory appears whole.
  const fs::path partial = target.parent_path() / ("." + report.model_name + ".partial-" + std::to_string(getpid()));
  fs::remove_all(partial);
  try {
    fs::create_directory(partial);
    for (const char* file : {"config.json", "tokenizer.json"}) fs::copy_file(base_model_dir / file, partial / file);
    nlohmann::json record{{"base_model", report.base_model},
                          {"model_name", report.model_name},
                          {"options", options_json(options)},
                          {"chosen_epoch", report.chosen_epoch},
                          {"base_validation_accuracy", report.base_validation_accuracy},
                          {"training_texts", train.texts.size()},
                          {"validation_texts", validation.texts.size()},
                          {"classes", train.classes},
                          {"seconds", report.seconds},
                          {"epochs", nlohmann::json::array()}};
    for (const auto& e : report.epochs) {
      record["epochs"].push_back({{"epoch", e.epoch}, {"train_loss", e.train_loss},
                                  {"validation_accuracy", e.validation_accuracy}, {"seconds", e.seconds}});
    }
    const std::map<std::string, std::string> metadata{
        {"format", "pt"},
        {"base_model", report.base_model},
        {"fine_tuned_layers", std::to_string(options.layers)},
        {"ldaproj_fine_tune", record.dump()}};
    write_weights(model_weights_file(base_model_dir), bert, chosen, partial / "model.safetensors", metadata);
    std::ofstream(partial / "fine_tune.json") << record.dump(2) << "\n";
    fs::rename(partial, target);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(partial, ignored);
    throw;
  }
  return report;
}

}  // namespace ldaproj
