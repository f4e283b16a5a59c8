// The ldaproj command line: import, embed, train, distill, query, validate,
// stats, export, synth, bench, domains, ensemble, encode, serve, projections,
// backup. Exit codes: 0 ok, 1 failure, 2 usage.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "cli/command_support.hpp"
#include "cli/fine_tune_command.hpp"
#include "cli/model_commands.hpp"
#include "cli/progress.hpp"
#include "cli/scale_commands.hpp"
#include "cli/train_command.hpp"
#include "cli/validators.hpp"
#include "ldaproj/distill.hpp"
#include "ldaproj/ensemble.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/eval.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/server.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/student.hpp"
#include "ldaproj/train.hpp"
#include "text/utf8.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ldaproj::cli {
namespace {

// Options shared by every command that turns text into embeddings.
struct EncoderFlags {
  std::string model_dir;
  int threads = 0;
  std::size_t max_tokens = 256;
  std::size_t batch_size = 32;
  std::string precision = "fp32";

  void add_to(CLI::App& cmd) {
    cmd.add_option("--model", model_dir,
                   "Model directory with config.json, tokenizer.json and a .safetensors file "
                   "(default: $LDAPROJ_MODEL, else the bundled all-MiniLM-L6-v2)");
    cmd.add_option("--threads", threads, "Threads for encoding and routing (default: all cores)")
        ->check(non_negative_number());
    cmd.add_option("--max-tokens", max_tokens,
                   "Truncate texts to this many tokens including [CLS]/[SEP]")
        ->capture_default_str()
        ->check(number_in(2, 512));
    cmd.add_option("--encoder-precision", precision,
                   "Encoder weights: fp32 (exact), bf16 (faster; cosine to fp32 >= 0.999) or int8 "
                   "(fastest for one short query; cosine >= 0.995 only); docs/BENCHMARKS.md. "
                   "Stored embeddings keep the model's name whichever is used")
        ->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  }

  Encoder load() const {
    EncoderOptions options;
    options.precision = parse_precision(precision);
    options.threads = threads;
    options.max_tokens = max_tokens;
    options.batch_size = batch_size;
    return Encoder::load(resolve_model_dir(model_dir), options);
  }
};

// How commands that route queries keep the teacher's heads.
struct TeacherFlags {
  std::string precision = "fp32";
  std::size_t route_k = 64;
  std::size_t top_domains = 0;
  std::size_t approximate_answers_from = SearcherOptions{}.approximate_answers_from;
  float question_temperature = kDefaultQuestionTemperature;
  std::size_t question_neighbors = kDefaultQuestionNeighbors;
  float blend_questions = 0.0f;
  float blend_direct = 0.0f;

  void add_to(CLI::App& cmd) {
    cmd.add_option("--blend-questions", blend_questions,
                   "multi-head: mix the routing weights with question-routing's, (1-B) teacher + B questions")
        ->capture_default_str()
        ->check(number_in(0.0, 0.999));
    cmd.add_option("--blend-direct", blend_direct,
                   "multi-head: rank answers by (1-G) cos(projection, answer) + G cos(query, answer)")
        ->capture_default_str()
        ->check(number_in(0.0, 0.999));
    cmd.add_option("--question-temperature", question_temperature,
                   "question-routing: softmax temperature over the similarities to the training questions")
        ->capture_default_str()
        ->check(positive_number());
    cmd.add_option("--question-neighbors", question_neighbors,
                   "question-routing: nearest training questions that share the weight (0: all)")
        ->capture_default_str();
    cmd.add_option("--route-k", route_k,
                   "sparse-teacher: route each query over this many nearest heads (HNSW over the centroids)")
        ->capture_default_str()
        ->check(positive_number());
    cmd.add_option("--top-domains", top_domains,
                   "ensemble: students run per query (the heaviest domains by the meta-router; default: as trained)");
    cmd.add_option("--approximate-answers-from", approximate_answers_from,
                   "Search the answers through an HNSW graph when there are at least this many (else exactly)")
        ->capture_default_str()
        ->check(positive_number());
    cmd.add_option("--precision", precision,
                   "Storage of centroids and answers for routing: fp32, bf16 (half the memory "
                   "traffic) or int8 (a quarter); see docs/BENCHMARKS.md for the accuracy cost")
        ->capture_default_str();
  }

  SearcherOptions options(const EncoderFlags& enc) const {
    SearcherOptions o;
    o.teacher = {parse_precision(precision), enc.threads};
    o.approximate_answers_from = approximate_answers_from;
    o.answer_index.threads = enc.threads;
    return o;
  }
};

std::string percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%5.1f%%", 100.0 * v);
  return buf;
}

std::string method_key(Method m) {
  std::string key(to_string(m));
  std::replace(key.begin(), key.end(), '-', '_');
  return key;
}

json metrics_json(const RetrievalMetrics& m) {
  return {{"recall_at_1", m.recall_at_1}, {"recall_at_5", m.recall_at_5}, {"mrr_at_10", m.mrr_at_10},
          {"ndcg_at_10", m.ndcg_at_10}};
}

std::vector<float> parse_float_list(const std::string& text, const char* flag) {
  std::vector<float> values;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      std::size_t used = 0;
      const float v = std::stof(item, &used);
      if (used != item.size() || !(v > 0.0f) || !std::isfinite(v)) throw std::invalid_argument(item);
      values.push_back(v);
    } catch (const std::exception&) {
      throw InputError(std::string(flag) + ": \"" + item + "\" is not a positive number");
    }
  }
  if (values.empty()) throw InputError(std::string(flag) + ": give a comma-separated list, e.g. 0.05,0.1,0.5");
  return values;
}

// ---------------------------------------------------------------- import
bool is_student_file(const std::string& file) { return fs::path(file).extension() == ".safetensors"; }

// The teacher fingerprint `ldaproj export` writes into a file's metadata; nullopt without one.
std::optional<Fingerprint> teacher_of(const std::map<std::string, std::string>& metadata, const std::string& file) {
  const auto it = metadata.find("teacher_fingerprint");
  if (it == metadata.end() || it->second.empty()) return std::nullopt;
  return Fingerprint::from_json(it->second, file + ": __metadata__ field \"teacher_fingerprint\"");
}

// Refuses a student or ensemble (`what`) distilled from another teacher than
// `projection`, or from an unknown one, unless forced; returns whether it is
// stored as forced (foreign or unknown).
bool check_teacher(const std::string& file, const char* what, const std::optional<Fingerprint>& teacher,
                   const Projection& projection, const std::string& db, bool force) {
  if (!projection.fingerprint) throw Error("projection \"" + projection.name + "\" has no fingerprint");
  const Fingerprint& own = *projection.fingerprint;
  const std::string target = "projection \"" + projection.name + "\" in " + db + " (" +
                             std::to_string(own.heads) + " heads, " + own.model + ", fingerprint " +
                             short_id(own.id) + ")";
  if (!teacher) {
    if (force) return true;
    throw InputError(file + ": the " + what + " has no teacher fingerprint (exported by an older ldaproj or made "
                     "by another tool), so nothing shows it was distilled from " + target +
                     "; nothing was imported. If you know it was, import it with --force (stats then marks it as "
                     "forced); otherwise distil one here with `ldaproj distill`");
  }
  const std::string diff = describe_difference(*teacher, own);
  if (diff.empty()) return false;
  if (force) return true;
  throw InputError(file + ": the " + what + " was distilled from another teacher, projection \"" +
                   teacher->projection + "\" (" + std::to_string(teacher->heads) + " heads, " + teacher->model +
                   ", fingerprint " + short_id(teacher->id) + "), not from " + target + ": " + diff +
                   "; nothing was imported. Import it into the store it came from, distil one here with "
                   "`ldaproj distill`, or give --force to import it anyway (stats then marks it as foreign)");
}

// A student from safetensors (ours or PyTorch's) for a projection.
void import_student(Store& store, const std::string& file, const std::string& projection_name, bool force) {
  std::map<std::string, std::string> metadata;
  StudentWeights weights = read_student_safetensors(file, &metadata);
  const auto projection = store.load_projection(projection_name);
  if (!projection) {
    throw InputError(file + ": there is no " +
                     (projection_name.empty() ? std::string("trained projection") : "projection \"" + projection_name + "\"") +
                     " in " + store.path().string() + " to attach the student to; run `ldaproj train` first");
  }
  if (auto model = metadata.find("model"); model != metadata.end() && model->second != projection->model) {
    throw InputError(file + ": the student was distilled on " + model->second + " embeddings, projection \"" +
                     projection->name + "\" uses " + projection->model);
  }
  StoredStudent student;
  student.projection = projection->name;
  student.teacher_fingerprint = teacher_of(metadata, file);
  student.forced = check_teacher(file, "student", student.teacher_fingerprint, *projection, store.path().string(), force);
  student.weights = std::move(weights);
  // Metrics from our own export come back; anything else starts empty.
  const auto metrics = metadata.find("metrics");
  const bool has_metrics = metrics != metadata.end() && json::accept(metrics->second) &&
                           json::parse(metrics->second).is_object();
  student.metrics_json = has_metrics ? metrics->second : "{}";
  store.save_student(student);
  std::printf("%s: student imported for projection \"%s\" (%zu parameters, %s, %zu layer(s))%s\n", file.c_str(),
              projection->name.c_str(), student.weights.parameter_count(),
              std::string(to_string(student.weights.config.variant)).c_str(), student.weights.config.layers,
              student.forced ? "; forced: its teacher is not this projection (stats marks it)" : "");
}

// An ensemble from our own export, for a projection with the same number of heads.
void import_ensemble(Store& store, const std::string& file, const std::string& projection_name, bool force) {
  std::map<std::string, std::string> metadata;
  const EnsembleWeights weights = read_ensemble_safetensors(file, &metadata);
  const auto projection = store.load_projection(projection_name);
  if (!projection) {
    throw InputError(file + ": there is no " +
                     (projection_name.empty() ? std::string("trained projection") : "projection \"" + projection_name + "\"") +
                     " in " + store.path().string() + " to attach the ensemble to; run `ldaproj train` first");
  }
  if (auto model = metadata.find("model"); model != metadata.end() && model->second != projection->model) {
    throw InputError(file + ": the ensemble was trained on " + model->second + " embeddings, projection \"" +
                     projection->name + "\" uses " + projection->model);
  }
  if (weights.domain_of_head.size() != projection->heads.size()) {
    throw InputError(file + ": the ensemble was trained for " + std::to_string(weights.domain_of_head.size()) +
                     " heads, projection \"" + projection->name + "\" has " + std::to_string(projection->heads.size()));
  }
  const auto metrics = metadata.find("metrics");
  const bool has_metrics = metrics != metadata.end() && json::accept(metrics->second) &&
                           json::parse(metrics->second).is_object();
  StoredEnsemble ensemble = to_stored_ensemble(weights, projection->name, has_metrics ? metrics->second : "{}");
  ensemble.teacher_fingerprint = teacher_of(metadata, file);
  ensemble.forced = check_teacher(file, "ensemble", ensemble.teacher_fingerprint, *projection, store.path().string(), force);
  store.save_ensemble(ensemble);
  std::printf("%s: ensemble imported for projection \"%s\" (%zu domains, %zu parameters)%s\n", file.c_str(),
              projection->name.c_str(), weights.config.domains, weights.parameter_count(),
              ensemble.forced ? "; forced: its teacher is not this projection (stats marks it)" : "");
}

int run_import(const std::string& db, const std::vector<std::string>& files, const std::string& projection,
               bool force) {
  // A model file only fits the store it was distilled from: a new database
  // could never take it, and must not be left behind empty.
  std::error_code ec;
  if (!fs::exists(db, ec)) {
    for (const auto& file : files) {
      if (!is_student_file(file)) continue;
      throw InputError(file + ": a student or ensemble is imported into the store whose projection it was "
                       "distilled from, and " + db + " does not exist; import it into that store (or a copy "
                       "made with `ldaproj backup`), or distil a new one; nothing was created");
    }
  }
  Store store = Store::open(db);
  for (const auto& file : files) {
    if (is_student_file(file)) {
      while_doing("importing " + file + " into " + db, [&] {
        if (is_ensemble_safetensors(file)) {
          import_ensemble(store, file, projection, force);
        } else {
          import_student(store, file, projection, force);
        }
      });
      continue;
    }
    const ImportReport r = while_doing("importing " + file + " into " + db, [&] { return import_file(store, file); });
    if (r.outcome == ImportOutcome::AlreadyImported) {
      std::printf("%s: already imported as %s (same content), skipped\n", file.c_str(), r.same_as.c_str());
      continue;
    }
    const char* what = r.outcome == ImportOutcome::Unchanged ? "unchanged, skipped"
                       : r.outcome == ImportOutcome::Updated ? "updated"
                                                             : "imported";
    std::string notes;
    if (r.outcome == ImportOutcome::Updated) {
      notes += "; " + std::to_string(r.rows_added) + " rows added, " + std::to_string(r.rows_removed) + " removed";
    }
    if (r.duplicate_questions + r.duplicate_answers > 0) {
      notes += "; " + std::to_string(r.duplicate_questions) + " questions and " + std::to_string(r.duplicate_answers) +
               " answers already in their cluster, counted once";
    }
    if (r.held_out > 0) notes += "; " + std::to_string(r.held_out) + " \"novel\" (held-out) questions not imported";
    std::printf("%s: %s (%lld clusters, %lld questions, %lld answers%s)\n", file.c_str(), what,
                static_cast<long long>(r.clusters), static_cast<long long>(r.questions),
                static_cast<long long>(r.answers), notes.c_str());
  }
  return 0;
}

// ---------------------------------------------------------------- embed
int run_embed(const std::string& db, const EncoderFlags& flags, std::size_t batch, bool quiet) {
  require_existing_db(db);
  Store store = Store::open(db);
  const Encoder encoder = flags.load();
  // A broken model (NaN weights) fails here, before the store registers it.
  (void)encoder.encode({"model check"});
  const std::int64_t model_id = store.ensure_model(encoder.model_name(), encoder.dim());
  std::size_t total_done = 0;
  for (EntityKind kind : {EntityKind::Question, EntityKind::Answer}) {
    const char* label = kind == EntityKind::Question ? "questions" : "answers";
    const std::vector<PendingText> pending = store.missing_embeddings(model_id, kind);
    if (pending.empty()) continue;
    Progress progress(std::string("embedding ") + label, pending.size(), quiet);
    // Each batch is committed on its own, so an interrupted run keeps every
    // finished batch and a rerun picks up where it stopped.
    for (std::size_t begin = 0; begin < pending.size(); begin += batch) {
      const std::size_t end = std::min(pending.size(), begin + batch);
      std::vector<std::string> texts;
      std::vector<std::int64_t> ids;
      for (std::size_t i = begin; i < end; ++i) {
        texts.push_back(pending[i].text);
        ids.push_back(pending[i].id);
      }
      const Matrix vectors = encoder.encode(texts);
      while_doing("storing embeddings in " + db, [&] { store.put_embeddings(model_id, kind, ids, vectors); });
      progress.advance(end - begin);
    }
    total_done += pending.size();
  }
  std::printf("%s: %zu new embeddings with %s (%zu-d)\n", db.c_str(), total_done,
              encoder.model_name().c_str(), encoder.dim());
  return 0;
}

// ---------------------------------------------------------------- distill
struct DistillFlags {
  DistillOptions options;
  std::string projection, variant = "block", init = "teacher", schedule = "cosine",
              sources = "questions,perturbed,within,across";
  bool as_json = false, quiet = false;
};

std::string fixed(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

int run_distill(const std::string& db, DistillFlags f) {
  require_existing_db(db);
  Store store = Store::open(db);
  f.options.config.variant = parse_student_variant(f.variant);
  f.options.init = parse_student_init(f.init);
  f.options.schedule = parse_lr_schedule(f.schedule);
  f.options.data.sources = parse_data_sources(f.sources);
  // --seed promises reproducible data as well as init and shuffling.
  f.options.data.seed = f.options.seed;

  // A bar per epoch with the running loss on a terminal; one line per epoch.
  std::unique_ptr<Progress> bar;
  DistillObserver observer;
  const bool show = !f.quiet && !f.as_json;
  // Phases before the first epoch can take minutes at 100k heads: reported
  // on stderr also under --json (stdout keeps the JSON alone).
  if (!f.quiet) {
    observer.on_phase = [](const std::string& line) { std::fprintf(stderr, "distill: %s\n", line.c_str()); };
  }
  if (show) {
    observer.on_batch = [&bar](const DistillProgress& p) {
      if (p.batch == 1) {
        bar = std::make_unique<Progress>("epoch " + std::to_string(p.epoch) + "/" + std::to_string(p.epochs),
                                         p.batches, isatty(fileno(stderr)) == 0);
      }
      char note[64];
      std::snprintf(note, sizeof note, "loss %.5f", p.train_loss);
      bar->set_note(note);
      bar->advance(1);
    };
    observer.on_epoch = [](const DistillEpoch& e) {
      std::fprintf(stderr, "epoch %zu: train loss %.5f  validation loss %.5f  cosine %.4f  lr %.2g  %.1fs%s\n",
                   e.epoch, e.train_loss, e.validation_loss, e.validation_cosine, e.lr, e.seconds,
                   e.improved ? "  (best)" : "");
    };
  }
  const StoreDistillReport result = distill_projection(store, f.projection, f.options, observer);
  const DistillReport& r = result.report;
  const auto projection = store.load_projection(result.projection);
  const std::size_t teacher_floats = 2 * projection->heads.size() * r.weights.config.dim;
  // A student exists to be smaller than its teacher; on a small store the
  // defaults can make it far larger, which nothing else would point out.
  std::vector<std::string> warnings;
  if (r.weights.parameter_count() > teacher_floats) {
    const StudentConfig& c = r.weights.config;
    // The smallest student these flags can give: one attention layer, one key per head.
    StudentConfig smallest = c;
    smallest.variant = StudentVariant::Attention;
    smallest.layers = 1;
    smallest.keys_per_head = 1;
    std::size_t least = 0;
    for (const TensorShape& t : student_shapes(smallest)) least += t.count();
    std::string advice =
        least < teacher_floats
            ? "distil a smaller one: now --variant " + std::string(to_string(c.variant)) + " --layers " +
                  std::to_string(c.layers) + " --heads " + std::to_string(c.num_heads) + " --keys-per-head " +
                  std::to_string(c.keys_per_head) + "; try --variant attention --layers 1 and fewer keys"
            : "no student is smaller on a store this size (the smallest, --variant attention --layers 1 "
              "--keys-per-head 1, has " + std::to_string(least) + "): query the teacher (--method multi-head) "
              "instead; a student pays off with many more heads";
    warnings.push_back("the student has " + std::to_string(r.weights.parameter_count()) + " parameters, " +
                       fixed(double(r.weights.parameter_count()) / double(std::max<std::size_t>(teacher_floats, 1)), 1) +
                       " times the teacher's head matrices (" + std::to_string(teacher_floats) + " floats for " +
                       std::to_string(projection->heads.size()) + " heads), and the teacher is exact; " + advice);
  }
  for (const std::string& w : warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  double best_cosine = r.initial_validation_cosine;
  for (const auto& e : r.history)
    if (e.epoch == r.best_epoch) best_cosine = e.validation_cosine;
  if (f.as_json) {
    json out{{"projection", result.projection},
             {"config", json::parse(r.weights.config.to_json())},
             {"init", std::string(to_string(f.options.init))},
             {"attention_gain", r.attention_gain},
             {"parameters", r.weights.parameter_count()},
             {"teacher_parameters", teacher_floats},
             {"train_samples", r.train_samples},
             {"validation_samples", r.validation_samples},
             {"validation_questions", r.validation_questions},
             {"per_source", r.per_source},
             {"epochs_run", r.history.size()},
             {"best_epoch", r.best_epoch},
             {"stopped_early", r.stopped_early},
             {"seconds", r.seconds},
             {"initial_validation_cosine", r.initial_validation_cosine},
             {"validation_cosine", best_cosine},
             {"warnings", warnings},
             {"history", json::array()}};
    for (const auto& e : r.history) {
      out["history"].push_back({{"epoch", e.epoch}, {"train_loss", e.train_loss}, {"validation_loss", e.validation_loss},
                                {"validation_cosine", e.validation_cosine}, {"lr", e.lr}, {"seconds", e.seconds}});
    }
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::printf("distilled projection \"%s\" into a %s student: %zu heads x %zu keys, %zu layer(s), %zu parameters "
              "(teacher %zu floats)\n",
              result.projection.c_str(), std::string(to_string(r.weights.config.variant)).c_str(),
              r.weights.config.num_heads, r.weights.config.keys_per_head, r.weights.config.layers,
              r.weights.parameter_count(), teacher_floats);
  std::printf("  %zu training inputs, %zu validation inputs (%zu held-out questions); best epoch %zu of %zu%s, %.1fs\n",
              r.train_samples, r.validation_samples, r.validation_questions, r.best_epoch, r.history.size(),
              r.stopped_early ? " (stopped early)" : "", r.seconds);
  std::printf("  validation cosine to the teacher: %s at init, %s after training (saved)\n",
              fixed(r.initial_validation_cosine, 4).c_str(), fixed(best_cosine, 4).c_str());
  if (f.options.init == StudentInit::Teacher) {
    std::printf("  attention gain at init: %g (%s)\n", r.attention_gain,
                f.options.attention_gain > 0.0f ? "given" : "chosen by validation loss");
  }
  return 0;
}

// ---------------------------------------------------------------- export
int run_export_ensemble(const Store& store, const std::string& db, const std::string& projection_name,
                        const std::string& out_file) {
  const auto stored = store.load_ensemble(projection_name);
  if (!stored) {
    throw InputError((projection_name.empty() ? std::string("the active projection") : "projection \"" + projection_name + "\"") +
                     " in " + db + " has no ensemble; train one with `ldaproj ensemble --db " + db + "`");
  }
  const EnsembleWeights weights = *load_ensemble_weights(store, stored->projection);
  const auto projection = store.load_projection(stored->projection);
  write_ensemble_safetensors(out_file, weights,
                             {{"projection", stored->projection},
                              {"model", projection->model},
                              {"teacher_temperature", std::to_string(projection->temperature)},
                              {"teacher_fingerprint", stored->teacher_fingerprint ? stored->teacher_fingerprint->to_json() : ""},
                              {"metrics", stored->metrics_json},
                              {"created_at", stored->created_at}});
  std::printf("%s: ensemble of projection \"%s\" (%zu domains, %zu parameters)\n", out_file.c_str(),
              stored->projection.c_str(), weights.config.domains, weights.parameter_count());
  return 0;
}

int run_export(const std::string& db, const std::string& projection_name, const std::string& out_file, bool ensemble) {
  require_existing_db(db);
  Store store = Store::open_read_only(db);
  if (ensemble) return run_export_ensemble(store, db, projection_name, out_file);
  const auto student = store.load_student(projection_name);
  if (!student) {
    throw InputError((projection_name.empty() ? std::string("the active projection") : "projection \"" + projection_name + "\"") +
                     " in " + db + " has no student; distil one with `ldaproj distill --db " + db + "`");
  }
  const auto projection = store.load_projection(student->projection);
  write_student_safetensors(out_file, student->weights,
                            {{"projection", student->projection},
                             {"model", projection->model},
                             {"teacher_temperature", std::to_string(projection->temperature)},
                             {"teacher_fingerprint", student->teacher_fingerprint ? student->teacher_fingerprint->to_json() : ""},
                             {"metrics", student->metrics_json},
                             {"created_at", student->created_at}});
  std::printf("%s: student of projection \"%s\" (%zu parameters)\n", out_file.c_str(), student->projection.c_str(),
              student->weights.parameter_count());
  return 0;
}

// ---------------------------------------------------------------- query
struct QueryFlags {
  std::string method = "multi-head";
  std::size_t top_k = 5;
  bool show_routing = false;
  bool as_json = false;
  std::optional<float> temperature;
  std::string projection;
  std::size_t routing_top = 8;
  std::optional<float> reject_below;
};

std::string bar(float fraction, int width) {
  const int filled = static_cast<int>(std::lround(std::clamp(fraction, 0.0f, 1.0f) * width));
  std::string s;
  for (int i = 0; i < width; ++i) s += i < filled ? "█" : "·";
  return s;
}

// Refuses a text the encoder must not see: invalid UTF-8 or over the length
// limit (and blank, unless `allow_blank`). `what` names it, e.g. "query #2".
void check_text(const std::string& text, const std::string& what, bool allow_blank) {
  if (const std::string bad = text::describe_invalid_utf8(text); !bad.empty()) {
    throw InputError(what + ": " + bad + "; give the text in UTF-8");
  }
  if (text.size() > kMaxTextBytes) {
    throw InputError(what + " is " + std::to_string(text.size()) + " bytes long, over the limit of " +
                     std::to_string(kMaxTextBytes) + "; shorten it");
  }
  if (!allow_blank && text.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw InputError(what + " is empty; give the question as text");
  }
}

// What the store has that the embeddings or the projection do not cover yet
// (Store::staleness): on stderr for text output; --json output carries it as
// a "warnings" field so that stdout stays one JSON document per line.
std::vector<std::string> stale_warnings(const Store& store, const std::string& projection, const std::string& db,
                                        bool as_json) {
  std::vector<std::string> warnings = describe_staleness(store.staleness(projection), db);
  if (!as_json) {
    for (const std::string& w : warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  }
  return warnings;
}

int run_query(const std::string& db, const EncoderFlags& enc, const TeacherFlags& teacher, const QueryFlags& f,
              std::vector<std::string> texts) {
  // No TEXT or "-": one question per line of standard input.
  const bool from_stdin = texts.empty() || (texts.size() == 1 && texts[0] == "-");
  if (from_stdin) {
    if (isatty(fileno(stdin)) != 0) {
      throw InputError("give the question as TEXT, or pipe questions (one per line) into `ldaproj query -`");
    }
    texts.clear();
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      texts.push_back(line);
    }
    if (texts.empty()) throw InputError("standard input holds no questions; give one question per line");
  }
  for (std::size_t i = 0; i < texts.size(); ++i) {
    check_text(texts[i], (from_stdin ? "standard input, line " : "query #") + std::to_string(i + 1), false);
  }
  require_existing_db(db);
  Store store = Store::open_for_reading(db);
  const Searcher searcher = Searcher::load(store, f.projection, teacher.options(enc));
  const std::vector<std::string> warnings = stale_warnings(store, searcher.projection_name(), db, f.as_json);
  const Encoder encoder = enc.load();
  if (encoder.model_name() != searcher.model_name()) {
    throw InputError("the projection was trained on " + searcher.model_name() +
                     " embeddings but the encoder is " + encoder.model_name() +
                     "; pass --model with the matching model directory");
  }
  SearchOptions options;
  options.method = parse_method(f.method);
  options.top_k = f.top_k;
  options.temperature = f.temperature;
  options.routing_top = (f.show_routing || f.as_json) ? f.routing_top : 0;
  options.route_k = teacher.route_k;
  options.top_domains = teacher.top_domains;
  options.question_temperature = teacher.question_temperature;
  options.question_neighbors = teacher.question_neighbors;
  options.blend_questions = teacher.blend_questions;
  options.blend_direct = teacher.blend_direct;
  std::optional<float> reject_below = f.reject_below;
  if (!reject_below) {
    // The threshold `validate --save-reject-threshold` stored with the projection.
    for (const Projection& p : store.projections()) {
      if (p.name == searcher.projection_name()) reject_below = stored_reject_threshold(p.metrics_json);
    }
  }
  options.reject_below = reject_below;
  // A forced import answers, but never without saying whose student it is.
  if (options.method == Method::Student || options.method == Method::Ensemble) {
    const auto provenance =
        options.method == Method::Student ? searcher.student_provenance() : searcher.ensemble_provenance();
    if (provenance && provenance->teacher != TeacherMatch::Matches) {
      std::fprintf(stderr, "warning: the %s of projection \"%s\": teacher %s, %s\n",
                   std::string(to_string(options.method)).c_str(), searcher.projection_name().c_str(),
                   std::string(to_string(provenance->teacher)).c_str(), provenance->detail.c_str());
    }
  }
  const auto results = searcher.search(encoder.encode(texts), options);
  const float shown_temperature = options.method == Method::QuestionRouting
                                      ? options.question_temperature
                                      : options.temperature.value_or(searcher.temperature());

  for (std::size_t i = 0; i < texts.size(); ++i) {
    const QueryResult& r = results[i];
    if (f.as_json) {
      json out{{"query", texts[i]}, {"method", to_string(options.method)}, {"answers", json::array()}};
      if (reject_below) {
        out["confidence"] = r.confidence;
        out["rejected"] = r.rejected;
      }
      for (const auto& a : r.answers) {
        out["answers"].push_back({{"cluster", a.cluster}, {"answer_id", a.answer_id},
                                  {"score", a.score}, {"text", a.text}});
      }
      if (!r.routing.empty()) {
        out["temperature"] = shown_temperature;
        out["routing"] = json::array();
        for (const auto& h : r.routing) {
          out["routing"].push_back({{"cluster", h.cluster}, {"weight", h.weight}, {"similarity", h.similarity}});
        }
      }
      if (options.method == Method::SparseTeacher) out["uncovered_mass_bound"] = r.uncovered_mass_bound;
      if (!warnings.empty()) out["warnings"] = warnings;
      std::cout << out.dump() << "\n";
      continue;
    }
    std::printf("query: %s\n", texts[i].c_str());
    if (r.rejected) {
      std::printf("  no answer: out of scope (confidence %.3f < %g)\n", r.confidence, *reject_below);
    } else if (reject_below) {
      std::printf("  (confidence %.3f >= %g)\n", r.confidence, *reject_below);
    }
    for (std::size_t k = 0; k < r.answers.size(); ++k) {
      const auto& a = r.answers[k];
      std::printf("  %zu. [%.3f] %s\n     %s\n", k + 1, a.score, a.cluster.c_str(), a.text.c_str());
    }
    if (f.show_routing && !r.routing.empty()) {
      std::printf("  routing (temperature %g, top %zu of %zu heads):\n", shown_temperature, r.routing.size(),
                  searcher.num_heads());
      std::size_t width = 0;
      for (const auto& h : r.routing) width = std::max(width, h.cluster.size());
      for (const auto& h : r.routing) {
        std::printf("    %-*s %s %.3f  (cos %.3f)\n", static_cast<int>(width), h.cluster.c_str(),
                    bar(h.weight, 30).c_str(), h.weight, h.similarity);
      }
    } else if (f.show_routing) {
      std::printf("  (routing is shown for --method multi-head, sparse-teacher and question-routing only)\n");
    }
    std::printf("\n");
  }
  return 0;
}

// ---------------------------------------------------------------- validate
struct ValidateFlags {
  std::string test_file, sweep, sweep_question, sweep_route_k, methods, projection, reject_below, cache;
  std::optional<float> temperature;
  bool as_json = false, choose_reject = false, save_reject = false;
};

// --reject-below: one threshold for every method ("0.5") or per method
// ("multi-head=0.5,question-routing=0.8"); a bare number is the default.
struct RejectThresholds {
  std::optional<float> fallback;
  std::map<Method, float> per_method;
  std::optional<float> for_method(Method m) const {
    auto it = per_method.find(m);
    return it != per_method.end() ? std::optional<float>(it->second) : fallback;
  }
  bool any() const { return fallback || !per_method.empty(); }
};

RejectThresholds parse_reject_thresholds(const std::string& text) {
  RejectThresholds out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    const std::string value = eq == std::string::npos ? item : item.substr(eq + 1);
    float v = 0;
    try {
      std::size_t used = 0;
      v = std::stof(value, &used);
      if (used != value.size() || !std::isfinite(v)) throw std::invalid_argument(value);
    } catch (const std::exception&) {
      throw InputError("--reject-below: \"" + item + "\" is not a number or METHOD=number");
    }
    if (eq == std::string::npos) {
      out.fallback = v;
    } else {
      out.per_method[parse_method(item.substr(0, eq))] = v;
    }
  }
  return out;
}

std::vector<std::size_t> parse_count_list(const std::string& text, const char* flag) {
  std::vector<std::size_t> values;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      std::size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size() || v < 0) throw std::invalid_argument(item);
      values.push_back(static_cast<std::size_t>(v));
    } catch (const std::exception&) {
      throw InputError(std::string(flag) + ": \"" + item + "\" is not a count");
    }
  }
  if (values.empty()) throw InputError(std::string(flag) + ": give a comma-separated list, e.g. 4,16,64");
  return values;
}

json rejection_json(const RejectionMetrics& r) {
  json threshold = std::isfinite(r.threshold) ? json(r.threshold) : json(nullptr);
  return {{"threshold", threshold}, {"in_scope_accuracy", r.in_scope_accuracy},
          {"out_of_scope_recall", r.out_of_scope_recall}, {"in_scope_rejected", r.in_scope_rejected}};
}

int run_validate(const std::string& db, const EncoderFlags& enc, const TeacherFlags& teacher, const ValidateFlags& f) {
  require_existing_db(db);
  const std::vector<LabeledQuery> tests = read_test_queries(f.test_file);
  for (std::size_t i = 0; i < tests.size(); ++i) {
    check_text(tests[i].text, f.test_file + ": query #" + std::to_string(i + 1), false);
  }
  const RejectThresholds reject = parse_reject_thresholds(f.reject_below);
  Store store = Store::open_for_reading(db);
  const Searcher searcher = Searcher::load(store, f.projection, teacher.options(enc));
  const std::vector<std::string> warnings = stale_warnings(store, searcher.projection_name(), db, f.as_json);
  std::set<std::string> known;
  for (const Cluster& c : store.clusters()) known.insert(c.external_id);
  std::vector<std::string> texts, expected;
  std::size_t unknown = 0, out_of_scope = 0;
  std::string unknown_example;
  for (const auto& t : tests) {
    texts.push_back(t.text);
    expected.push_back(t.cluster);
    if (t.out_of_scope()) {
      ++out_of_scope;
    } else if (!known.count(t.cluster)) {
      ++unknown;
      if (unknown_example.empty()) unknown_example = t.cluster;
    }
  }
  if (unknown > 0) {
    std::fprintf(stderr, "warning: %s: %zu test queries name clusters that are not in the store "
                 "(e.g. \"%s\"); they count as misses\n", f.test_file.c_str(), unknown, unknown_example.c_str());
  }
  if (out_of_scope == tests.size()) {
    throw InputError(f.test_file + ": every query is out of scope; retrieval needs in-scope queries too");
  }
  if (f.save_reject && !f.choose_reject) {
    throw InputError("--save-reject-threshold saves what --choose-reject-threshold chooses; give both");
  }
  if (f.choose_reject && out_of_scope == 0) {
    throw InputError("--choose-reject-threshold needs out-of-scope queries ({\"query\", \"out_of_scope\": true} "
                     "lines) in " + f.test_file);
  }
  std::optional<Matrix> cached;
  if (!f.cache.empty()) cached = read_query_embedding_cache(f.cache, searcher.model_name(), texts);
  Matrix queries;
  if (cached) {
    queries = std::move(*cached);
  } else {
    const Encoder encoder = enc.load();
    if (encoder.model_name() != searcher.model_name()) {
      throw InputError("the projection was trained on " + searcher.model_name() +
                       " embeddings but the encoder is " + encoder.model_name());
    }
    queries = encoder.encode(texts);
    if (!f.cache.empty()) write_query_embedding_cache(f.cache, searcher.model_name(), texts, queries);
  }
  const float tau = f.temperature.value_or(searcher.temperature());
  std::optional<double> answer_recall;
  if (searcher.answer_index_is_approximate()) {
    Matrix unit = queries;
    normalize_rows(unit, "query");
    answer_recall = searcher.answer_index_recall(unit, 10);
  }

  std::vector<Method> methods;
  if (f.methods.empty()) {
    for (Method m : kAllMethods)
      if ((m != Method::Student || searcher.has_student()) && (m != Method::Ensemble || searcher.has_ensemble()))
        methods.push_back(m);
  } else {
    std::stringstream ss(f.methods);
    std::string m;
    while (std::getline(ss, m, ',')) methods.push_back(parse_method(m));
  }

  const bool rejection = out_of_scope > 0 || reject.any();
  json out{{"queries", tests.size()}, {"in_scope_queries", tests.size() - out_of_scope},
           {"out_of_scope_queries", out_of_scope}, {"temperature", tau},
           {"question_temperature", teacher.question_temperature},
           {"question_neighbors", teacher.question_neighbors}, {"route_k", teacher.route_k},
           {"blend_questions", teacher.blend_questions}, {"blend_direct", teacher.blend_direct},
           {"projection", searcher.projection_name()}, {"methods", json::object()}};
  struct Row {
    Method method;
    RetrievalMetrics metrics;
    std::optional<RejectionMetrics> fixed, chosen;
  };
  std::vector<Row> table;
  std::map<Method, Agreement> agreements;  // student and ensemble vs the teacher
  auto base_options = [&](Method m) {
    SearchOptions options;
    options.method = m;
    options.top_k = 10;
    options.temperature = tau;
    options.route_k = teacher.route_k;
    options.top_domains = teacher.top_domains;
    options.question_temperature = teacher.question_temperature;
    options.question_neighbors = teacher.question_neighbors;
    options.blend_questions = teacher.blend_questions;
    options.blend_direct = teacher.blend_direct;
    // Retrieval metrics rank every query; rejection is scored from the confidence.
    options.include_confidence = rejection;
    return options;
  };
  for (Method m : methods) {
    const SearchOptions options = base_options(m);
    const auto results = searcher.search(queries, options);
    Row row{m, score_results(results, expected), std::nullopt, std::nullopt};
    json& entry = out["methods"][method_key(m)];
    entry = metrics_json(row.metrics);
    if (auto threshold = reject.for_method(m)) {
      row.fixed = score_rejection(results, expected, *threshold);
      entry["rejection"] = rejection_json(*row.fixed);
    }
    if (f.choose_reject) {
      row.chosen = choose_rejection_threshold(results, expected);
      entry["chosen_rejection"] = rejection_json(*row.chosen);
    }
    table.push_back(row);
    if (m == Method::SparseTeacher && !results.empty()) {
      double mean = 0, worst = 0;
      for (const QueryResult& r : results) {
        mean += r.uncovered_mass_bound;
        worst = std::max(worst, double(r.uncovered_mass_bound));
      }
      entry["route_k"] = teacher.route_k;
      entry["uncovered_mass_bound"] = {{"mean", mean / double(results.size())}, {"max", worst}};
    }
    if (m == Method::Student || m == Method::Ensemble) {
      // Against the teacher it was distilled from: the projection's own temperature.
      const Matrix projected = searcher.project(queries, options);
      SearchOptions teacher_options = options;
      teacher_options.method = Method::MultiHead;
      teacher_options.temperature = searcher.temperature();
      const Matrix teacher_projected = searcher.project(queries, teacher_options);
      const Agreement a = agreement(projected, teacher_projected, results,
                                    searcher.rank(teacher_projected, options.top_k));
      agreements[m] = a;
      entry["agreement"] = {{"top10_overlap", a.top10_overlap}, {"mean_cosine", a.mean_cosine},
                            {"min_cosine", a.min_cosine}};
      entry["parameters"] = m == Method::Student ? searcher.student_parameters() : searcher.ensemble_parameters();
      const auto provenance = m == Method::Student ? searcher.student_provenance() : searcher.ensemble_provenance();
      if (provenance) entry["teacher"] = std::string(to_string(provenance->teacher));
    }
  }
  struct SweepRow {
    std::string method, setting;
    RetrievalMetrics metrics;
  };
  std::vector<SweepRow> sweep_rows;
  auto sweep_one = [&](const SearchOptions& options, const std::string& setting, json row) {
    const RetrievalMetrics metrics = score_results(searcher.search(queries, options), expected);
    sweep_rows.push_back({std::string(to_string(options.method)), setting, metrics});
    json r = metrics_json(metrics);
    r.update(row);
    out["sweep"].push_back(r);
  };
  if (!f.sweep.empty() || !f.sweep_question.empty() || !f.sweep_route_k.empty()) out["sweep"] = json::array();
  if (!f.sweep.empty()) {
    for (float t : parse_float_list(f.sweep, "--sweep-temperature")) {
      SearchOptions options = base_options(Method::MultiHead);
      options.temperature = t;
      sweep_one(options, "temperature " + fixed(t, 4), {{"method", "multi-head"}, {"temperature", t}});
    }
  }
  if (!f.sweep_route_k.empty()) {
    for (std::size_t k : parse_count_list(f.sweep_route_k, "--sweep-route-k")) {
      SearchOptions options = base_options(Method::SparseTeacher);
      options.route_k = std::max<std::size_t>(k, 1);
      sweep_one(options, "route-k " + std::to_string(options.route_k),
                {{"method", "sparse-teacher"}, {"temperature", tau}, {"route_k", options.route_k}});
    }
  }
  if (!f.sweep_question.empty()) {
    for (float t : parse_float_list(f.sweep_question, "--sweep-question-temperature")) {
      SearchOptions options = base_options(Method::QuestionRouting);
      options.question_temperature = t;
      sweep_one(options, "question temperature " + fixed(t, 4),
                {{"method", "question-routing"}, {"question_temperature", t},
                 {"question_neighbors", teacher.question_neighbors}});
    }
  }
  if (answer_recall) out["answer_index"] = {{"kind", "hnsw"}, {"recall_at_10", *answer_recall}};
  if (!warnings.empty()) out["warnings"] = warnings;
  if (f.save_reject) {
    // multi-head's choice when it was scored (what query and serve default
    // to), else the first method's.
    const Row* chosen = nullptr;
    for (const Row& row : table) {
      if (row.chosen && (!chosen || row.method == Method::MultiHead)) chosen = &row;
    }
    if (!chosen) throw InputError("--save-reject-threshold: no threshold was chosen");
    Store writer = Store::open(db);
    writer.save_reject_threshold(searcher.projection_name(), chosen->chosen->threshold, f.test_file);
    out["saved_reject_threshold"] = {{"value", chosen->chosen->threshold},
                                     {"method", std::string(to_string(chosen->method))},
                                     {"projection", searcher.projection_name()}};
    if (!f.as_json) {
      std::printf("saved the %s threshold %.4g with projection \"%s\": query and serve use it when given none\n",
                  std::string(to_string(chosen->method)).c_str(), chosen->chosen->threshold,
                  searcher.projection_name().c_str());
    }
  }
  if (f.as_json) {
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::printf("%zu held-out queries", tests.size());
  if (out_of_scope > 0) std::printf(" (%zu out of scope)", out_of_scope);
  std::printf(", projection \"%s\" (%zu heads), temperature %g\n", searcher.projection_name().c_str(),
              searcher.num_heads(), tau);
  if (answer_recall) {
    std::printf("answers searched through an HNSW graph: recall@10 %.3f against exact search\n", *answer_recall);
  }
  std::printf("\n");
  std::printf("  %-17s %8s %8s %8s %8s\n", "method", "R@1", "R@5", "MRR@10", "nDCG@10");
  for (const Row& row : table) {
    const RetrievalMetrics& r = row.metrics;
    std::printf("  %-17s %8s %8s %8.3f %8.3f\n", std::string(to_string(row.method)).c_str(),
                percent(r.recall_at_1).c_str(), percent(r.recall_at_5).c_str(), r.mrr_at_10, r.ndcg_at_10);
  }
  auto print_rejection = [](const char* title, const std::vector<Row>& rows, bool chosen) {
    bool header = false;
    for (const Row& row : rows) {
      const auto& r = chosen ? row.chosen : row.fixed;
      if (!r) continue;
      if (!header) {
        std::printf("\n  %s\n  %-17s %10s %12s %12s %12s\n", title, "method", "threshold", "in-scope acc",
                    "OOS recall", "in-scope rej");
        header = true;
      }
      std::printf("  %-17s %10.4f %12s %12s %12s\n", std::string(to_string(row.method)).c_str(), r->threshold,
                  percent(r->in_scope_accuracy).c_str(), percent(r->out_of_scope_recall).c_str(),
                  percent(r->in_scope_rejected).c_str());
    }
  };
  print_rejection("out-of-scope rejection (--reject-below):", table, false);
  print_rejection("out-of-scope rejection, threshold chosen on this file (max in-scope acc + OOS recall):", table,
                  true);
  for (const auto& [m, a] : agreements) {
    std::printf("\n  %s vs teacher (temperature %g): top-10 overlap %s, cosine mean %.4f, min %.4f\n",
                std::string(to_string(m)).c_str(), searcher.temperature(), percent(a.top10_overlap).c_str(),
                a.mean_cosine, a.min_cosine);
    const auto provenance = m == Method::Student ? searcher.student_provenance() : searcher.ensemble_provenance();
    if (provenance && provenance->teacher != TeacherMatch::Matches) {
      std::printf("  (its teacher %s: %s)\n", std::string(to_string(provenance->teacher)).c_str(),
                  provenance->detail.c_str());
    }
  }
  if (!sweep_rows.empty()) {
    std::printf("\n  sweep:\n  %-17s %-26s %8s %8s %8s %8s\n", "method", "setting", "R@1", "R@5", "MRR@10",
                "nDCG@10");
    for (const SweepRow& row : sweep_rows) {
      const RetrievalMetrics& r = row.metrics;
      std::printf("  %-17s %-26s %8s %8s %8.3f %8.3f\n", row.method.c_str(), row.setting.c_str(),
                  percent(r.recall_at_1).c_str(), percent(r.recall_at_5).c_str(), r.mrr_at_10, r.ndcg_at_10);
    }
  }
  return 0;
}

// ---------------------------------------------------------------- stats
// A student's or ensemble's teacher: {"match", "forced", "detail", "fingerprint"}.
template <typename Stored>
json provenance_json(const Stored& stored) {
  return {{"match", std::string(to_string(stored.provenance.teacher))},
          {"forced", stored.provenance.forced},
          {"detail", stored.provenance.detail},
          {"fingerprint", stored.teacher_fingerprint ? json(stored.teacher_fingerprint->id) : json(nullptr)}};
}

// "" when it matches its projection, else a warning for the text listing.
std::string provenance_note(const Provenance& p) {
  if (p.teacher == TeacherMatch::Matches && !p.forced) return {};
  std::string note = p.teacher == TeacherMatch::Differs ? "FOREIGN" : "teacher unknown";
  if (p.forced) note += ", imported with --force";
  return "\n    " + note + (p.detail.empty() ? "" : ": " + p.detail);
}

int run_stats(const std::string& db, bool as_json) {
  require_existing_db(db);
  Store store = Store::open_for_reading(db);
  const StoreStats s = store.stats();
  json out{{"database", db}, {"schema_version", s.schema_version}, {"clusters", s.clusters},
           {"questions", s.questions}, {"answers", s.answers}, {"import_batches", s.batches},
           {"embeddings", json::object()}, {"projections", json::array()}};
  for (const auto& [model, count] : s.embeddings_per_model) out["embeddings"][model] = count;
  const Staleness stale = store.staleness();
  const std::vector<std::string> warnings = describe_staleness(stale, db);
  out["staleness"] = {{"model", stale.model},
                      {"projection", stale.projection},
                      {"questions_without_embedding", stale.questions_without_embedding},
                      {"answers_without_embedding", stale.answers_without_embedding},
                      {"clusters_without_head", stale.clusters_without_head},
                      {"clusters_changed", stale.clusters_changed},
                      {"warnings", warnings}};
  for (const auto& p : s.projections) {
    out["projections"].push_back({{"name", p.name}, {"model", p.model}, {"temperature", p.temperature},
                                  {"centroid_method", p.centroid_method}, {"active", p.active},
                                  {"created_at", p.created_at}, {"heads", p.head_count},
                                  {"fingerprint", p.fingerprint ? json::parse(p.fingerprint->to_json()) : json(nullptr)},
                                  {"metrics", json::parse(p.metrics_json.empty() ? "{}" : p.metrics_json)}});
  }
  out["students"] = json::array();
  for (const auto& st : s.students) {
    out["students"].push_back({{"projection", st.projection}, {"config", json::parse(st.weights.config.to_json())},
                               {"created_at", st.created_at}, {"teacher", provenance_json(st)},
                               {"metrics", json::parse(st.metrics_json.empty() ? "{}" : st.metrics_json)}});
  }
  out["ensembles"] = json::array();
  for (const auto& e : s.ensembles) {
    out["ensembles"].push_back({{"projection", e.projection}, {"config", json::parse(e.config_json)},
                                {"created_at", e.created_at}, {"teacher", provenance_json(e)},
                                {"metrics", json::parse(e.metrics_json.empty() ? "{}" : e.metrics_json)}});
  }
  if (as_json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("%s (schema v%d)\n  clusters   %lld\n  questions  %lld\n  answers    %lld\n  imports    %lld\n",
              db.c_str(), s.schema_version, static_cast<long long>(s.clusters),
              static_cast<long long>(s.questions), static_cast<long long>(s.answers),
              static_cast<long long>(s.batches));
  for (const auto& [model, count] : s.embeddings_per_model) {
    std::printf("  embeddings %lld (%s)\n", static_cast<long long>(count), model.c_str());
  }
  for (const auto& p : s.projections) {
    // The tuning's trials are a table's worth of numbers: text shows the
    // choice and how it was validated, --json every trial.
    json metrics = json::parse(p.metrics_json.empty() ? "{}" : p.metrics_json, nullptr, false);
    std::string tuned;
    if (metrics.is_object() && metrics.contains("tuning") && metrics["tuning"].is_object()) {
      const json tuning = metrics["tuning"];
      metrics.erase("tuning");
      if (tuning.value("tuned", false) && tuning.contains("chosen")) {
        const json& c = tuning["chosen"];
        char line[512];
        std::snprintf(line, sizeof line,
                      "\n    tuned: temperature %g, %s; R@1 %.1f%%, MRR@10 %.3f on %s; %zu settings tried "
                      "(stats --json lists them)",
                      c.value("temperature", 0.0),
                      c.value("key_epochs", 0) > 0
                          ? ("learned keys (" + std::to_string(c.value("key_epochs", 0)) + " epochs)").c_str()
                          : "centroid keys",
                      100.0 * c.value("recall_at_1", 0.0), c.value("mrr_at_10", 0.0),
                      tuning.value("note", std::string("held-out questions")).c_str(),
                      tuning.contains("trials") ? tuning["trials"].size() : std::size_t{0});
        tuned = line;
      } else {
        tuned = "\n    not tuned: " + tuning.value("note", std::string("no held-out questions"));
      }
    }
    std::printf("  projection %s%s: model %s, %zu heads, temperature %g, %s centroids, %s, fingerprint %s, "
                "metrics %s%s\n",
                p.name.c_str(), p.active ? " (active)" : "", p.model.c_str(), p.head_count, p.temperature,
                p.centroid_method.c_str(), p.created_at.c_str(),
                p.fingerprint ? short_id(p.fingerprint->id).c_str() : "(none stored)",
                metrics.is_object() ? metrics.dump().c_str() : p.metrics_json.c_str(), tuned.c_str());
  }
  for (const auto& st : s.students) {
    const StudentConfig& c = st.weights.config;
    std::printf("  student of %s: %s, %zu heads x %zu keys, %zu layer(s), %s, metrics %s%s\n", st.projection.c_str(),
                std::string(to_string(c.variant)).c_str(), c.num_heads, c.keys_per_head, c.layers,
                st.created_at.c_str(), st.metrics_json.c_str(), provenance_note(st.provenance).c_str());
  }
  for (const auto& e : s.ensembles) {
    const json config = json::parse(e.config_json);
    std::printf("  ensemble of %s: %s domains, top %s per query, %s%s\n", e.projection.c_str(),
                config.value("domains", json(0)).dump().c_str(), config.value("top_domains", json(0)).dump().c_str(),
                e.created_at.c_str(), provenance_note(e.provenance).c_str());
  }
  for (const std::string& w : warnings) std::printf("  warning: %s\n", w.c_str());
  return 0;
}

// ---------------------------------------------------------------- encode
int run_encode(const EncoderFlags& enc, bool as_json, std::vector<std::string> texts) {
  const bool from_stdin = texts.empty();
  if (from_stdin) {
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      texts.push_back(line);
    }
  }
  for (std::size_t i = 0; i < texts.size(); ++i) {
    // Refused like `query ""`: an empty text has no meaning to embed.
    check_text(texts[i], (from_stdin ? "standard input, line " : "text #") + std::to_string(i + 1), false);
  }
  const Encoder encoder = enc.load();
  // Encode in chunks so a long stdin stream prints as it goes.
  constexpr std::size_t kChunk = 256;
  for (std::size_t begin = 0; begin < texts.size(); begin += kChunk) {
    const std::vector<std::string> chunk(texts.begin() + static_cast<std::ptrdiff_t>(begin),
                                         texts.begin() + static_cast<std::ptrdiff_t>(std::min(texts.size(), begin + kChunk)));
    const Matrix m = encoder.encode(chunk);
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      if (as_json) {
        json out{{"text", chunk[i]}, {"embedding", std::vector<float>(m.row(i), m.row(i) + m.cols)}};
        std::cout << out.dump() << "\n";
      } else {
        std::cout << chunk[i];
        char buf[32];
        for (std::size_t j = 0; j < m.cols; ++j) {
          std::snprintf(buf, sizeof buf, "%c%.9g", j == 0 ? '\t' : ' ', m(i, j));
          std::cout << buf;
        }
        std::cout << "\n";
      }
    }
  }
  return 0;
}

// ---------------------------------------------------------------- serve
// Signals reach the main loop through a pipe: the handler may run on any
// thread (OpenBLAS starts its own before main) and may only write().
int signal_pipe[2] = {-1, -1};

extern "C" void forward_signal(int signo) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(signo);
  [[maybe_unused]] const auto n = write(signal_pipe[1], &byte, 1);
  errno = saved;
}

int run_serve(ServerOptions options, bool access_log) {
  require_existing_db(options.db.string());
  if (options.api_key.empty()) {
    if (const char* key = std::getenv("LDAPROJ_API_KEY"); key && *key) options.api_key = key;
  }
  if (access_log) {
    options.access_log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  }
  const bool loopback = options.host == "127.0.0.1" || options.host == "localhost" || options.host == "::1";
  if (!loopback && options.api_key.empty()) {
    std::fprintf(stderr, "warning: serving on %s without --api-key: anyone who can reach this address "
                 "can query the store\n", options.host.c_str());
  }
  if ((options.host == "0.0.0.0" || options.host == "::") && options.allowed_hosts.empty()) {
    std::fprintf(stderr, "note: listening on every address, but only requests whose Host is localhost, 127.0.0.1 "
                 "or ::1 are answered (DNS-rebinding protection); add the names or addresses clients use with "
                 "--allowed-host NAME\n");
  }
  if (pipe(signal_pipe) != 0) throw Error("cannot create the signal pipe");
  fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK);
  struct sigaction action {};
  action.sa_handler = forward_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int signo : {SIGHUP, SIGINT, SIGTERM}) sigaction(signo, &action, nullptr);

  Server server(options);
  const int port = server.start();
  const ServedModel m = server.served();
  std::string methods;
  for (const auto& name : m.methods) methods += (methods.empty() ? "" : ", ") + name;
  std::printf("ldaproj serve: listening on http://%s:%d/ (projection \"%s\", %zu heads, %zu answers; "
              "methods %s)%s\n",
              options.host.find(':') != std::string::npos ? ("[" + options.host + "]").c_str() : options.host.c_str(),
              port, m.projection.c_str(), m.heads, m.answers, methods.c_str(),
              options.api_key.empty() ? "" : "; API key required");
  for (const std::string& w : m.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::printf("ldaproj serve: SIGHUP or POST /v1/reload reloads the model; Ctrl-C stops\n");
  std::fflush(stdout);

  for (;;) {
    unsigned char signo = 0;
    const ssize_t n = read(signal_pipe[0], &signo, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || signo != SIGHUP) break;
    try {
      const ServedModel fresh = server.reload();
      std::printf("ldaproj serve: reloaded projection \"%s\" (generation %llu, %zu heads)\n",
                  fresh.projection.c_str(), static_cast<unsigned long long>(fresh.generation), fresh.heads);
      for (const std::string& w : fresh.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ldaproj serve: reload failed, still serving the previous model: %s\n", e.what());
    }
    std::fflush(stdout);
  }
  std::printf("ldaproj serve: stopping\n");
  std::fflush(stdout);
  server.stop();
  return 0;
}

}  // namespace
}  // namespace ldaproj::cli

int main(int argc, char** argv) {
  using namespace ldaproj::cli;
  CLI::App app{"ldaproj: question->answer semantic search by multi-head projection.\n"
               "Typical flow: import -> embed -> train [-> distill / ensemble] -> query/validate/serve."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("ldaproj ") + LDAPROJ_VERSION_STRING);

  std::string db;
  auto add_db = [&db](CLI::App* cmd) {
    cmd->add_option("--db", db, "SQLite database file")->required();
  };

  std::vector<std::string> files;
  std::string import_projection;
  auto* import_cmd = app.add_subcommand("import", "Import Q-A clusters from JSON (original format) or JSONL files, "
                                                  "or a student or ensemble from .safetensors");
  add_db(import_cmd);
  import_cmd->add_option("files", files, "Files to import; each is one transaction")->required()->check(CLI::ExistingFile);
  import_cmd->add_option("--projection", import_projection,
                         "Projection a .safetensors student belongs to (default: the active one)");
  bool import_force = false;
  import_cmd->add_flag("--force", import_force,
                       "Import a .safetensors student or ensemble even when its teacher fingerprint is not the "
                       "projection's (or it has none); it is stored marked as forced");
  import_cmd->footer(
      "Formats: {\"clusters\":[{\"id\", \"answers\":{\"default\":...}, \"queries\":{\"short\":[...],...}}]}\n"
      "or JSON Lines {\"cluster\",\"question\"[,\"length\"]} / {\"cluster\",\"answer\"[,\"variant\"]}.\n"
      "Lengths: short, medium, long (JSON Lines: or none); \"novel\" questions are held out, not imported.\n"
      "Re-importing an unchanged file is a no-op; a changed file replaces its earlier batch; a file whose\n"
      "content another path already imported adds nothing. A question already in its cluster is stored\n"
      "once; an answer variant another file gave the cluster with other text is refused.\n"
      "A .safetensors file is a student (from `ldaproj export` or PyTorch, config in __metadata__) and\n"
      "replaces the projection's student, or an ensemble (from `ldaproj export --ensemble`) and replaces\n"
      "the projection's ensemble. It must carry the fingerprint of that projection (the teacher it was\n"
      "distilled from: model, cluster set, keys and answers, temperature): one from another store or\n"
      "another training run, or without a fingerprint, is refused unless --force.");

  EncoderFlags enc;
  std::size_t embed_batch = 64;
  bool quiet = false;
  auto* embed_cmd = app.add_subcommand("embed", "Embed every question and answer that has no embedding for the model");
  add_db(embed_cmd);
  enc.add_to(*embed_cmd);
  embed_cmd->add_option("--batch-size", embed_batch, "Texts per committed batch")->capture_default_str()->check(positive_number());
  embed_cmd->add_flag("--quiet,-q", quiet, "No progress output");
  embed_cmd->footer("Resumable: every finished batch is committed, so an interrupted run loses nothing.");

  TrainCommand train;
  train.add_to(app);

  DistillFlags df;
  auto* distill_cmd = app.add_subcommand("distill", "Distil the teacher into a student transformer with learned keys/values");
  add_db(distill_cmd);
  {
    ldaproj::DistillOptions& o = df.options;
    distill_cmd->add_option("--projection", df.projection, "Projection to distil (default: the active one)");
    distill_cmd->add_option("--heads", o.config.num_heads, "Attention heads (must divide the embedding dimension)")
        ->capture_default_str()->check(positive_number());
    distill_cmd->add_option("--keys-per-head", o.config.keys_per_head, "Learned keys per head (keys = heads x this)")
        ->capture_default_str()->check(positive_number());
    distill_cmd->add_option("--layers", o.config.layers, "Stacked blocks")->capture_default_str()->check(number_in(1, 64));
    distill_cmd->add_option("--variant", df.variant, "attention, mlp-attention or block")
        ->capture_default_str()->check(CLI::IsMember({"attention", "mlp-attention", "block"}));
    distill_cmd->add_option("--ff-dim", o.config.ff_dim, "FFN/MLP hidden width (default: 2 x dim)");
    distill_cmd->add_option("--init", df.init, "teacher (keys from k-means of the centroids, values from their answers) or random")
        ->capture_default_str()->check(CLI::IsMember({"teacher", "random"}));
    distill_cmd->add_option("--epochs", o.epochs, "Maximum epochs")->capture_default_str()->check(number_in(1, 100000));
    distill_cmd->add_option("--batch-size", o.batch_size, "Inputs per step")->capture_default_str()->check(positive_number());
    distill_cmd->add_option("--lr", o.lr, "Peak AdamW learning rate")->capture_default_str()->check(positive_number());
    distill_cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay (weight matrices only)")->capture_default_str()
        ->check(non_negative_number());
    distill_cmd->add_option("--schedule", df.schedule, "LR schedule: cosine, step (x0.3 every third) or constant")
        ->capture_default_str()->check(CLI::IsMember({"cosine", "step", "constant"}));
    distill_cmd->add_option("--patience", o.patience, "Stop after this many epochs without validation improvement (0: never)")
        ->capture_default_str();
    distill_cmd->add_option("--mse-weight", o.mse_weight, "Weight of the squared error to the teacher's output")
        ->capture_default_str()->check(non_negative_number());
    distill_cmd->add_option("--cosine-weight", o.cosine_weight, "Weight of 1 - cosine to the teacher's output")
        ->capture_default_str()->check(non_negative_number());
    distill_cmd->add_option("--kl-weight", o.kl_weight,
                            "Weight of KL(teacher routing pooled onto the key groups || student attention)")
        ->capture_default_str()->check(non_negative_number());
    distill_cmd->add_option("--answer-weight", o.answer_weight,
                            "Weight of the squared error of the scores of the teacher's top answers")
        ->capture_default_str()->check(non_negative_number());
    distill_cmd->add_option("--answer-top-k", o.answer_top_k, "How many of the teacher's top answers that term scores")
        ->capture_default_str()->check(positive_number());
    distill_cmd->add_flag("--keys-only", o.keys_only,
                          "Train only the learned keys and values; the projections keep the teacher init "
                          "(less to overfit when the questions cover few clusters)");
    distill_cmd->add_option("--attention-gain", o.attention_gain,
                            "Teacher init: scale of the attention output against the query in the residual "
                            "(large: start as the compressed teacher; small: start near the query). 0 chooses "
                            "it by validation loss")
        ->capture_default_str()->check(non_negative_number());
    distill_cmd->add_option("--samples", o.data.samples, "Generated training inputs (besides the questions)")
        ->capture_default_str();
    distill_cmd->add_option("--sources", df.sources,
                            "Comma-separated: questions, perturbed, within, across, extrapolated, centroids, or all (every one)")
        ->capture_default_str();
    distill_cmd->add_option("--validation-fraction", o.data.validation_fraction,
                            "Share of each cluster's questions held out for early stopping")
        ->capture_default_str()->check(number_in(0.0, 0.9));
    distill_cmd->add_option("--max-validation-questions", o.data.max_validation_questions,
                            "At most this many held-out questions (each validated with 3 perturbed copies every epoch); "
                            "the rest of those drawn train")
        ->capture_default_str()->check(positive_number());
    distill_cmd->add_option("--noise", o.data.noise, "Largest noise level for perturbed inputs")
        ->capture_default_str()->check(non_negative_number());
    distill_cmd->add_option("--seed", o.seed, "Seed for data, init and shuffling")->capture_default_str();
    distill_cmd->add_option("--threads", o.threads, "Training threads (default: all cores)")->check(non_negative_number());
    distill_cmd->add_flag("--json", df.as_json, "Print one JSON object with the training history");
    distill_cmd->add_flag("--quiet,-q", df.quiet, "No progress output");
    distill_cmd->footer("The student is stored with the projection (replacing an earlier one) and used by\n"
                        "`query --method student` and `validate`. Training uses libtorch.");
  }

  std::string export_projection, export_out;
  bool export_ensemble = false;
  auto* export_cmd = app.add_subcommand("export", "Write a projection's student (or ensemble) as safetensors (config in __metadata__)");
  export_cmd->add_flag("--ensemble", export_ensemble, "Export the projection's ensemble instead of its student");
  add_db(export_cmd);
  export_cmd->add_option("--projection", export_projection, "Projection whose student to export (default: the active one)");
  export_cmd->add_option("--out", export_out, "Output .safetensors file")->required();

  QueryFlags qf;
  std::vector<std::string> query_texts;
  std::optional<float> query_temperature;
  auto* query_cmd = app.add_subcommand("query", "Answer text queries");
  add_db(query_cmd);
  enc.add_to(*query_cmd);
  TeacherFlags teacher;
  teacher.add_to(*query_cmd);
  query_cmd->add_option("--method", qf.method,
                        "multi-head, question-routing, student, ensemble, sparse-teacher, direct or global-w")
      ->capture_default_str();
  query_cmd->add_option("--reject-below", qf.reject_below,
                        "Out-of-scope rejection: no answer when the query's confidence (largest cosine to a "
                        "head's centroid; to a training question for question-routing) is below this "
                        "(default: the threshold `validate --save-reject-threshold` stored with the projection, "
                        "if any)")
      ->check(finite_number());
  query_cmd->add_option("--top-k", qf.top_k, "Answers per query")->capture_default_str()->check(positive_number());
  query_cmd->add_option("--temperature", query_temperature, "Override the projection's temperature")->check(positive_number());
  query_cmd->add_option("--projection", qf.projection, "Projection name (default: the active one)");
  query_cmd->add_flag("--show-routing", qf.show_routing, "Show the heaviest heads as bars");
  query_cmd->add_option("--routing-top", qf.routing_top, "Heads shown with --show-routing")->capture_default_str();
  query_cmd->add_flag("--json", qf.as_json, "One JSON object per query");
  query_cmd->add_option("text", query_texts,
                        "Query texts; none or \"-\": one question per line of standard input");

  ValidateFlags vf;
  auto* validate_cmd = app.add_subcommand(
      "validate", "Recall@1, Recall@5, MRR@10, nDCG@10 (and out-of-scope rejection) on held-out queries for every method");
  add_db(validate_cmd);
  enc.add_to(*validate_cmd);
  teacher.add_to(*validate_cmd);
  validate_cmd->add_option("--test", vf.test_file,
                           "Held-out file: {\"clusters\":[{\"id\",\"queries\":{\"novel\":[...]}}]} or JSONL "
                           "{\"query\",\"cluster\"} / {\"query\",\"out_of_scope\":true}")
      ->required()->check(CLI::ExistingFile);
  validate_cmd->add_option("--temperature", vf.temperature, "Temperature for multi-head and sparse-teacher (default: the projection's)")
      ->check(positive_number());
  validate_cmd->add_option("--sweep-temperature", vf.sweep, "multi-head at each of these temperatures, e.g. 0.01,0.05,0.1,0.5,1");
  validate_cmd->add_option("--sweep-route-k", vf.sweep_route_k, "sparse-teacher with each of these --route-k, e.g. 2,4,8,64");
  validate_cmd->add_option("--sweep-question-temperature", vf.sweep_question,
                           "question-routing at each of these question temperatures, e.g. 0.01,0.02,0.05");
  validate_cmd->add_option("--methods", vf.methods,
                           "Comma-separated subset of direct,global-w,multi-head,sparse-teacher,question-routing,student,"
                           "ensemble (default: all; student and ensemble when trained, with their agreement with the teacher)");
  validate_cmd->add_option("--reject-below", vf.reject_below,
                           "Out-of-scope rejection threshold on the confidence: X for every method or "
                           "METHOD=X,... ; reports in-scope accuracy and out-of-scope recall");
  validate_cmd->add_flag("--choose-reject-threshold", vf.choose_reject,
                         "Per method, the threshold that maximises in-scope accuracy + out-of-scope recall on this "
                         "file (run it on a validation split; needs out-of-scope queries)");
  validate_cmd->add_flag("--save-reject-threshold", vf.save_reject,
                         "With --choose-reject-threshold: store multi-head's chosen threshold with the projection, "
                         "so query and serve reject below it unless given another");
  validate_cmd->add_option("--embedding-cache", vf.cache,
                           "File caching the held-out queries' embeddings (re-encoded when the texts or model change)");
  validate_cmd->add_option("--projection", vf.projection, "Projection name (default: the active one)");
  validate_cmd->add_flag("--json", vf.as_json, "Print one JSON object");
  validate_cmd->footer("R@k, MRR@10 and nDCG@10 count in-scope queries and ignore rejection; out-of-scope queries\n"
                       "only enter the rejection metrics (the CLINC150 paper's in-scope accuracy and OOS recall).");

  bool stats_json = false;
  auto* stats_cmd = app.add_subcommand("stats", "Summarise the store");
  add_db(stats_cmd);
  stats_cmd->add_flag("--json", stats_json, "Print JSON");

  bool encode_json = false;
  std::vector<std::string> encode_texts;
  auto* encode_cmd = app.add_subcommand("encode", "Embed each TEXT (or each line of standard input)");
  enc.add_to(*encode_cmd);
  encode_cmd->add_flag("--json", encode_json, "One JSON line {\"text\", \"embedding\"} per input (default: text<TAB>values)");
  encode_cmd->add_option("text", encode_texts, "Texts (default: read lines from standard input)");

  ldaproj::ServerOptions serve_options;
  bool serve_log = false;
  std::string serve_db, serve_model;
  auto* serve_cmd = app.add_subcommand("serve", "Serve the JSON API and the web page over HTTP");
  serve_cmd->add_option("--db", serve_db, "SQLite database file with a trained projection")->required();
  serve_cmd->add_option("--host", serve_options.host, "Address to listen on (loopback by default)")->capture_default_str();
  serve_cmd->add_option("--port", serve_options.port, "TCP port; 0 picks a free one")->capture_default_str()
      ->check(number_in(0, 65535));
  serve_cmd->add_option("--threads", serve_options.threads, "Request worker threads (default: cores, at least 4)")
      ->check(non_negative_number());
  serve_cmd->add_option("--api-key", serve_options.api_key,
                        "Require \"Authorization: Bearer KEY\" on /v1/* and /metrics (default: $LDAPROJ_API_KEY)");
  serve_cmd->add_option("--projection", serve_options.projection, "Projection name (default: the active one)");
  serve_cmd->add_option("--model", serve_model,
                        "Model directory (default: $LDAPROJ_MODEL, else the bundled all-MiniLM-L6-v2)");
  serve_cmd->add_option("--max-tokens", serve_options.max_tokens, "Encoder truncation in tokens")
      ->capture_default_str()->check(number_in(2, 512));
  std::string serve_encoder_precision = "fp32";
  serve_cmd->add_option("--encoder-precision", serve_encoder_precision,
                        "Encoder weights: fp32, bf16 or int8 (see `ldaproj encode --help`)")
      ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16", "int8"}));
  serve_cmd->add_option("--max-body-bytes", serve_options.max_body_bytes, "Largest request body")
      ->capture_default_str()->check(positive_number());
  serve_cmd->add_option("--max-batch", serve_options.max_batch, "Most texts or embeddings per request")
      ->capture_default_str()->check(positive_number());
  serve_cmd->add_option("--max-text-bytes", serve_options.max_text_bytes, "Longest text, in UTF-8 bytes")
      ->capture_default_str()->check(positive_number());
  serve_cmd->add_option("--timeout", serve_options.timeout_seconds,
                        "Seconds a client has to send a whole request (headers and body) and to read the reply; "
                        "slower clients get 408 and are disconnected")
      ->capture_default_str()->check(positive_number());
  serve_cmd->add_option("--keep-alive", serve_options.keep_alive_seconds,
                        "Seconds an idle keep-alive connection waits for its next request")
      ->capture_default_str()->check(positive_number());
  serve_cmd->add_option("--max-connections", serve_options.max_connections,
                        "Open connections at once; more are answered 503 and closed")
      ->capture_default_str()->check(positive_number());
  serve_cmd->add_option("--max-requests-per-connection", serve_options.max_requests_per_connection,
                        "Requests on one keep-alive connection before the server closes it")
      ->capture_default_str()->check(positive_number());
  serve_cmd->add_option("--allowed-host", serve_options.allowed_hosts,
                        "A Host name clients may use besides localhost, 127.0.0.1, ::1 and --host (repeatable; "
                        "\".example.com\" for a domain and its subdomains, \"*\" for any); other names get 400, "
                        "which stops DNS-rebinding pages from reaching a loopback server");
  serve_cmd->add_option("--allowed-origin", serve_options.allowed_origins,
                        "A web origin (e.g. https://app.example.com) whose pages may POST to the API (repeatable; "
                        "\"*\" for any); the server's own page always may, other browser POSTs get 403");
  float serve_reject_below = 0.0f;
  auto* serve_reject = serve_cmd->add_option("--reject-below", serve_reject_below,
                                             "Default out-of-scope threshold for /v1/search requests without "
                                             "reject_below (default: the one `validate --save-reject-threshold` "
                                             "stored with the projection, if any; see `query --help`)")
      ->check(finite_number());
  serve_cmd->add_option("--blend-questions", serve_options.blend_questions,
                        "multi-head: default of the request field blend_questions (see `query --help`)")
      ->capture_default_str()->check(number_in(0.0, 0.999));
  serve_cmd->add_option("--blend-direct", serve_options.blend_direct,
                        "multi-head: default of the request field blend_direct (see `query --help`)")
      ->capture_default_str()->check(number_in(0.0, 0.999));
  serve_cmd->add_flag("--log", serve_log, "Print one line per request to standard error");
  serve_cmd->footer(
      "Endpoints: POST /v1/search, /v1/project, /v1/embed, /v1/reload; GET /v1/clusters, /v1/info,\n"
      "/healthz, /metrics; the web page at /. Errors are {\"error\":{\"code\",\"message\"}}.\n"
      "SIGHUP (or POST /v1/reload) loads a newly trained model without dropping requests.\n"
      "See docs/API.md.");
  SynthCommand synth;
  synth.add_to(app);
  BenchCommand crossover;
  crossover.add_to(app);
  DomainsCommand domains;
  domains.add_to(app);
  EnsembleCommand ensemble;
  ensemble.add_to(app);
  FineTuneEncoderCommand fine_tune;
  fine_tune.add_to(app);
  ProjectionsCommand projections;
  projections.add_to(app);
  BackupCommand backup;
  backup.add_to(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  try {
    if (*import_cmd) return run_import(db, files, import_projection, import_force);
    if (*distill_cmd) return run_distill(db, df);
    if (*export_cmd) return run_export(db, export_projection, export_out, export_ensemble);
    if (*embed_cmd) return run_embed(db, enc, embed_batch, quiet);
    if (*train.command) return train.run();
    if (*query_cmd) {
      qf.temperature = query_temperature;
      return run_query(db, enc, teacher, qf, query_texts);
    }
    if (*validate_cmd) {
      return run_validate(db, enc, teacher, vf);
    }
    if (*stats_cmd) return run_stats(db, stats_json);
    if (*encode_cmd) return run_encode(enc, encode_json, encode_texts);
    if (*serve_cmd) {
      serve_options.db = serve_db;
      serve_options.model_dir = serve_model;
      serve_options.encoder_precision = ldaproj::parse_precision(serve_encoder_precision);
      if (serve_reject->count() > 0) serve_options.reject_below = serve_reject_below;
      return run_serve(serve_options, serve_log);
    }
    if (*synth.command) return synth.run();
    if (*crossover.command) return crossover.run();
    if (*domains.command) return domains.run();
    if (*ensemble.command) return ensemble.run();
    if (*fine_tune.command) return fine_tune.run();
    if (*projections.command) return projections.run();
    if (*backup.command) return backup.run();
  } catch (const ldaproj::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 2;
}
