// `ldaproj train` (see train_command.hpp): options, the held-out file for the
// tuning, progress on stderr, and the tuning table or a JSON report.
#include "cli/train_command.hpp"

#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/command_support.hpp"
#include "cli/validators.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/eval.hpp"
#include "ldaproj/store.hpp"

namespace ldaproj::cli {

namespace {

std::string cell(double v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f", 100.0 * v);
  return buf;
}

std::string keys_text(std::size_t epochs) {
  return epochs == 0 ? std::string("centroid keys") : "learned keys (" + std::to_string(epochs) + " epochs)";
}

// The tuning as a grid: a row per temperature, a column per key setting,
// R@1 in each tried cell, the chosen one starred.
void print_tuning(const TuningReport& t, std::size_t questions) {
  if (!t.tuned) {
    std::printf("  not tuned: %s; temperature %g with centroid keys for this size\n", t.note.c_str(),
                t.chosen.temperature);
    return;
  }
  std::printf("  tuned on %s, then refit on all %zu questions; R@1 %% on the held-out questions:\n", t.note.c_str(),
              questions);
  std::set<float> temperatures;
  std::set<std::size_t> epochs;
  std::map<std::pair<float, std::size_t>, const TuningTrial*> at;
  for (const TuningTrial& trial : t.trials) {
    temperatures.insert(trial.temperature);
    epochs.insert(trial.key_epochs);
    at[{trial.temperature, trial.key_epochs}] = &trial;
  }
  std::printf("    %-12s", "temperature");
  for (std::size_t e : epochs) {
    std::printf(" %10s", e == 0 ? "centroids" : (std::to_string(e) + " ep").c_str());
  }
  std::printf("\n");
  for (float tau : temperatures) {
    std::printf("    %-12g", tau);
    for (std::size_t e : epochs) {
      auto it = at.find({tau, e});
      if (it == at.end()) {
        std::printf(" %10s", "");
        continue;
      }
      const bool chosen = tau == t.chosen.temperature && e == t.chosen.key_epochs;
      std::printf(" %10s", (cell(it->second->recall_at_1) + (chosen ? "*" : " ")).c_str());
    }
    std::printf("\n");
  }
  std::printf("  chosen (*): temperature %g, %s: R@1 %.1f%%, MRR@10 %.3f (%.1fs of tuning)\n", t.chosen.temperature,
              keys_text(t.chosen.key_epochs).c_str(), 100 * t.chosen.recall_at_1, t.chosen.mrr_at_10, t.seconds);
}

}  // namespace

void TrainCommand::add_to(CLI::App& app) {
  command = app.add_subcommand("train", "Train the multi-head projection (one head per cluster), tuning its settings");
  command->add_option("--db", db, "SQLite database file")->required();
  command->add_option("--temperature", temperature,
                      "Routing softmax temperature (default: chosen on held-out questions)")
      ->check(positive_number());
  command->add_option("--learn-keys", key_epochs,
                      "Epochs of discriminative key learning after the centroids (cross-entropy of the routing "
                      "softmax on the training questions; 0: centroid keys; default: chosen on held-out questions)");
  command->add_flag("--no-tune", no_tune,
                    "Do not tune: temperature 0.1 and centroid keys unless given (the behaviour before tuning)");
  command->add_option("--val", validation,
                      "Held-out queries (validate's formats) to tune on instead of a slice of the training "
                      "questions; embedded with --model")
      ->check(CLI::ExistingFile);
  command->add_option("--model", model_dir,
                      "Model directory that embeds --val (default: $LDAPROJ_MODEL, else the bundled encoder)");
  command->add_option("--seed", options.slice.seed, "Seed of the held-out slice")->capture_default_str();
  command->add_option("--name", name,
                      "Projection name (default: multi_head_<model>, or multi_head_<model>-2, -3, ... when taken: "
                      "earlier projections are kept); an existing name is refused unless --replace");
  command->add_flag("--replace", replace,
                    "With --name: replace the projection of that name, dropping its student and ensemble");
  command->add_option("--centroid", centroid, "Centroid of a head's questions: mean or reweighted")
      ->capture_default_str()
      ->check(CLI::IsMember({"mean", "reweighted"}));
  command->add_option("--embedding-model", embedding_model, "Embedding model name when the store holds several");
  command->add_option("--key-lr", options.key_lr, "Adam learning rate of the key learning")
      ->capture_default_str()
      ->check(positive_number());
  command->add_option("--key-candidates", options.key_candidates,
                      "Beyond 1,024 keys, each question's softmax runs over its own head and this many nearest "
                      "competing keys (memory and time grow with it)")
      ->capture_default_str()
      ->check(positive_number());
  command->add_option("--keys-per-head", options.keys_per_head,
                      "Keys per head: > 1 starts that many sub-keys per head by k-means over its questions "
                      "(learned with --learn-keys); a head's routing score is the log-sum-exp of its keys'")
      ->capture_default_str()
      ->check(positive_number());
  command->add_flag("--query-adapter", options.query_adapter,
                    "Also learn a query adapter W (d x d, from zero) with the keys; the teacher then routes "
                    "normalise(q + W q)");
  command->add_option("--adapter-lr", options.adapter_lr, "Adam learning rate of --query-adapter")
      ->capture_default_str()
      ->check(positive_number());
  command->add_option("--adapter-decay", options.adapter_decay, "Weight decay of --query-adapter")
      ->capture_default_str()
      ->check(non_negative_number());
  command->add_option("--threads", options.threads, "Threads (default: all cores)")->check(non_negative_number());
  command->add_flag("--json", as_json, "Print one JSON object: the projection, its settings and the tuning");
  command->add_flag("--quiet,-q", quiet, "No progress lines on stderr");
  command->footer(
      "Unless both --temperature and --learn-keys are given, train holds out a slice of the training\n"
      "questions (10% per fold, at most 3,000; 20% below 3,000 questions; 3 folds below 50,000 questions,\n"
      "else 1; only from clusters with two or more, never all of one), scores centroid keys at temperatures\n"
      "from 0.002 to 0.2, learns keys from the highest temperature the centroids still route well at,\n"
      "moving up or down while it helps (scored at 10 to 200 epochs), keeps the best by R@1 + MRR@10 on\n"
      "that slice and refits on all questions. Every flag given is kept as it is; --temperature 0.1\n"
      "--learn-keys 0 (or --no-tune) trains as before tuning. The choice and its figures are stored in the\n"
      "projection's metrics (stats, stats --json, /v1/info).\n"
      "Every run keeps the earlier projections (with their students and ensembles) and makes the new one\n"
      "active; `ldaproj projections list|activate|delete` manages them.");
}

int TrainCommand::run() {
  require_existing_db(db);
  if (replace && name.empty()) throw InputError("--replace needs --name: the projection to replace");
  Store store = Store::open(db);
  options.name = name;
  options.existing = name.empty() ? ExistingProjection::NextFree
                     : replace    ? ExistingProjection::Replace
                                  : ExistingProjection::Refuse;
  options.centroid_method = parse_centroid_method(centroid);
  options.temperature = temperature;
  options.key_epochs = key_epochs;
  options.tune = !no_tune;
  if (!quiet) {
    options.on_progress = [](const std::string& line) {
      std::fprintf(stderr, "train: %s\n", line.c_str());
      std::fflush(stderr);
    };
  }
  const std::string model = pick_embedding_model(store, embedding_model);
  ValidationSet held_out;
  if (!validation.empty()) {
    if (no_tune) throw InputError("--val is what the tuning scores on; drop --no-tune or --val");
    const std::vector<LabeledQuery> queries = read_test_queries(validation);
    std::vector<std::string> texts;
    for (const LabeledQuery& q : queries) {
      texts.push_back(q.text);
      held_out.clusters.push_back(q.cluster);
    }
    EncoderOptions encoder_options;
    encoder_options.threads = options.threads;
    const Encoder encoder = Encoder::load(resolve_model_dir(model_dir), encoder_options);
    if (encoder.model_name() != model) {
      throw InputError("--val would be embedded with " + encoder.model_name() + " but the store is trained on " +
                       model + " embeddings; give --model with that model's directory");
    }
    if (options.on_progress) options.on_progress("embedding " + std::to_string(texts.size()) + " validation queries");
    held_out.queries = encoder.encode(texts);
    options.validation = &held_out;
  }
  const TeacherTrainReport r = while_doing("training on " + db, [&] { return train_teacher(store, model, options); });
  for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  // Never drop a model without saying so.
  if (r.saved.dropped_student || r.saved.dropped_ensemble) {
    std::fprintf(stderr, "warning: --replace dropped the %s of the earlier projection \"%s\"\n",
                 r.saved.dropped_student && r.saved.dropped_ensemble ? "student and ensemble"
                 : r.saved.dropped_student                         ? "student"
                                                                   : "ensemble",
                 r.name.c_str());
  }
  if (as_json) {
    nlohmann::json out{{"projection", r.name},       {"projection_id", r.projection_id}, {"model", model},
                       {"heads", r.heads},           {"questions", r.questions},         {"temperature", r.temperature},
                       {"key_epochs", r.keys.epochs}, {"centroid_method", centroid},     {"seconds", r.seconds},
                       {"warnings", r.warnings},
                       {"replaced", r.saved.replaced},
                       {"dropped_student", r.saved.dropped_student},
                       {"dropped_ensemble", r.saved.dropped_ensemble},
                       {"previously_active", r.saved.previously_active}};
    if (options.tune) out["tuning"] = nlohmann::json::parse(tuning_metrics_json(r.tuning));
    if (r.keys.epochs > 0) {
      out["learned_keys"] = {{"initial_accuracy", r.keys.initial_accuracy}, {"final_accuracy", r.keys.final_accuracy},
                             {"initial_loss", r.keys.initial_loss},         {"final_loss", r.keys.final_loss},
                             {"exact", r.keys.exact},                       {"candidates", r.keys.candidates},
                             {"seconds", r.keys.seconds}};
    }
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::printf("trained projection \"%s\": %zu heads from %zu questions, %s centroids, temperature %g, %s, "
              "model %s (now active; %.1fs)\n",
              r.name.c_str(), r.heads, r.questions, centroid.c_str(), r.temperature, keys_text(r.keys.epochs).c_str(),
              model.c_str(), r.seconds);
  if (!r.saved.previously_active.empty()) {
    std::printf("  the earlier projection \"%s\" is kept (with its student and ensemble, if any): "
                "`ldaproj projections activate %s` switches back, `ldaproj projections list` shows them all\n",
                r.saved.previously_active.c_str(), r.saved.previously_active.c_str());
  }
  if (r.saved.replaced) std::printf("  replaced the earlier projection of that name (--replace)\n");
  const bool tuned_something = options.tune && (!temperature || !key_epochs);
  if (tuned_something) print_tuning(r.tuning, r.questions);
  if (r.keys.epochs > 0) {
    std::printf("  learned keys: training questions routed to their own head %.1f%% -> %.1f%%, cross-entropy "
                "%.4f -> %.4f%s\n",
                100 * r.keys.initial_accuracy, 100 * r.keys.final_accuracy, r.keys.initial_loss, r.keys.final_loss,
                r.keys.exact ? "" : (" (over each question's " + std::to_string(r.keys.candidates) +
                                     " nearest competitors)").c_str());
  }
  return 0;
}

}  // namespace ldaproj::cli
