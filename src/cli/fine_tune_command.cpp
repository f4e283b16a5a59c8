// `ldaproj finetune-encoder` (see fine_tune_command.hpp): questions of the
// store as training texts (one class per cluster), an optional held-out file
// to choose the epoch, the model directory written whole or not at all.
#include "cli/fine_tune_command.hpp"
#include "cli/validators.hpp"

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/eval.hpp"
#include "ldaproj/store.hpp"

namespace ldaproj::cli {

void FineTuneEncoderCommand::add_to(CLI::App& app) {
  command = app.add_subcommand(
      "finetune-encoder",
      "Fine-tune the encoder's last layers on the store's questions (one class per cluster) into a new model directory");
  command->add_option("--db", db, "SQLite database with imported questions")->required();
  command->add_option("--out", out,
                      "New model directory to write; its name becomes the model name embeddings are stored under")
      ->required();
  command->add_option("--model", base_model,
                      "Model directory to start from (default: $LDAPROJ_MODEL, else the bundled all-MiniLM-L6-v2)");
  command->add_option("--val", validation,
                      "Held-out queries (validate's formats) to choose the epoch by accuracy; without it the "
                      "last epoch is kept")
      ->check(CLI::ExistingFile);
  command->add_option("--layers", options.layers, "Last transformer layers trained")->capture_default_str()
      ->check(positive_number());
  command->add_option("--epochs", options.epochs, "Epochs over the questions")->capture_default_str()
      ->check(number_in(1, 1000));
  command->add_option("--batch-size", options.batch_size, "Questions per step")->capture_default_str()
      ->check(positive_number());
  command->add_option("--lr", options.layer_lr, "Peak AdamW learning rate of the layers")->capture_default_str()
      ->check(positive_number());
  command->add_option("--key-lr", options.key_lr, "AdamW learning rate of the per-cluster keys")
      ->capture_default_str()->check(positive_number());
  command->add_option("--temperature", options.temperature, "Routing softmax temperature of the loss")
      ->capture_default_str()->check(positive_number());
  command->add_option("--weight-decay", options.weight_decay, "AdamW weight decay of the layers")
      ->capture_default_str()->check(non_negative_number());
  command->add_option("--dropout", options.dropout, "Dropout inside the trained layers")->capture_default_str()
      ->check(number_in(0.0, 0.99));
  command->add_option("--seed", options.seed, "Seed for initialisation order and dropout")->capture_default_str();
  command->add_option("--threads", options.threads, "Training threads (default: all cores)")
      ->check(non_negative_number());
  command->add_flag("--json", as_json,
                    "Print fine_tune.json (options, every epoch, the chosen one) and model_dir as one JSON object");
  command->add_flag("--quiet,-q", quiet, "No progress output");
  command->footer(
      "Then: ldaproj embed --db DB --model OUT; ldaproj train --db DB --embedding-model NAME ...;\n"
      "query/validate/serve with --model OUT. The store keeps the base model's embeddings and\n"
      "projections; the new model's are stored under its own name. Training uses libtorch; the\n"
      "defaults (2 layers, 8 epochs, lr 2e-4, temperature 0.05) were chosen on CLINC150's val split\n"
      "(experiments/FINETUNE.md, docs/QUALITY.md).");
}

int FineTuneEncoderCommand::run() const {
  if (!std::filesystem::exists(db)) throw InputError("database " + db + " does not exist");
  LabeledTexts train, val;
  std::map<std::string, std::size_t> class_of_external;
  std::string model_name;
  {
    const Store store = Store::open_read_only(db);
    const auto snapshot = store.read_snapshot();
    std::map<std::int64_t, std::size_t> class_of_cluster;
    std::map<std::int64_t, std::string> external;
    for (const Cluster& c : store.clusters()) external.emplace(c.id, c.external_id);
    const auto questions = store.questions();
    for (const Question& q : questions) {
      if (class_of_cluster.emplace(q.cluster_id, class_of_cluster.size()).second) {
        class_of_external.emplace(external.at(q.cluster_id), class_of_cluster.size() - 1);
      }
      train.texts.push_back(q.text);
      train.labels.push_back(class_of_cluster.at(q.cluster_id));
    }
    train.classes = class_of_cluster.size();
    if (train.classes < 2) {
      throw InputError(db + " has questions in " + std::to_string(train.classes) +
                       " cluster(s); fine-tuning needs at least two (run `ldaproj import` first)");
    }
    model_name = std::filesystem::weakly_canonical(std::filesystem::absolute(out)).filename().string();
    if (store.find_model(model_name)) {
      throw InputError(db + " already holds embeddings of a model named \"" + model_name +
                       "\"; write the fine-tuned model to a directory with another name");
    }
  }
  if (!validation.empty()) {
    std::size_t index = 0, out_of_scope = 0;
    for (const LabeledQuery& q : read_test_queries(validation)) {
      ++index;
      if (q.out_of_scope()) {
        ++out_of_scope;
        continue;
      }
      const auto it = class_of_external.find(q.cluster);
      if (it == class_of_external.end()) {
        throw InputError(validation + ": query " + std::to_string(index) + " names cluster \"" + q.cluster +
                         "\", which has no questions in " + db);
      }
      val.texts.push_back(q.text);
      val.labels.push_back(it->second);
    }
    if (val.texts.empty()) throw InputError(validation + ": no in-scope query");
    if (!quiet && out_of_scope > 0) {
      std::fprintf(stderr, "%s: %zu out-of-scope queries ignored for fine-tuning\n", validation.c_str(), out_of_scope);
    }
  }
  val.classes = train.classes;

  const auto base_dir = resolve_model_dir(base_model);
  if (!quiet) {
    std::fprintf(stderr,
                 "fine-tuning the last %zu layer(s) of %s on %zu questions of %zu clusters (%zu validation "
                 "queries); caching the frozen layers first\n",
                 options.layers, base_dir.string().c_str(), train.texts.size(), train.classes, val.texts.size());
  }
  const EncoderFineTuneReport report =
      fine_tune_encoder(base_dir, train, val, out, options, [&](const EncoderFineTuneEpoch& e) {
        if (quiet) return;
        if (e.validation_accuracy >= 0) {
          std::fprintf(stderr, "epoch %zu/%zu: train loss %.4f, validation accuracy %.2f%% (%.1f s)\n", e.epoch,
                       options.epochs, e.train_loss, 100.0 * e.validation_accuracy, e.seconds);
        } else {
          std::fprintf(stderr, "epoch %zu/%zu: train loss %.4f (%.1f s)\n", e.epoch, options.epochs, e.train_loss,
                       e.seconds);
        }
      });
  if (as_json) {  // the record written next to the weights, plus where they are
    std::ifstream in(report.model_dir / "fine_tune.json");
    nlohmann::json j = nlohmann::json::parse(in);
    j["model_dir"] = report.model_dir.string();
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  const auto& chosen = report.epochs.at(report.chosen_epoch - 1);
  std::printf("wrote %s (model \"%s\", from %s): epoch %zu of %zu kept", report.model_dir.string().c_str(),
              report.model_name.c_str(), report.base_model.c_str(), report.chosen_epoch, report.epochs.size());
  if (chosen.validation_accuracy >= 0) {
    std::printf(", validation accuracy %.2f%% (base encoder with centroid keys %.2f%%)",
                100.0 * chosen.validation_accuracy, 100.0 * report.base_validation_accuracy);
  }
  if (chosen.validation_accuracy >= 0 && chosen.validation_accuracy <= report.base_validation_accuracy) {
    std::fprintf(stderr,
                 "note: no epoch beat the base encoder on the validation queries; compare both with "
                 "`ldaproj validate` before switching (too few questions per cluster overfit quickly)\n");
  }
  std::printf(", %.0f s\nnext: ldaproj embed --db %s --model %s && ldaproj train --db %s --embedding-model %s\n",
              report.seconds, db.c_str(), report.model_dir.string().c_str(), db.c_str(), report.model_name.c_str());
  return 0;
}

}  // namespace ldaproj::cli
