// Teacher training: groups stored embeddings by cluster, builds one head per
// cluster (centroid + answer embedding), optionally learns discriminative
// keys (or several sub-keys per head, and a query adapter) from the
// questions, and saves them as a projection; and how a stored projection's
// keys, answers and adapter are laid out for routing (projection_routing).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>

#include "common/memory.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/train.hpp"
#include "ldaproj/tuning.hpp"

namespace ldaproj {

namespace {

std::unordered_map<std::int64_t, std::size_t> row_of(const EmbeddingSet& set) {
  std::unordered_map<std::int64_t, std::size_t> rows;
  rows.reserve(set.ids.size());
  for (std::size_t i = 0; i < set.ids.size(); ++i) rows.emplace(set.ids[i], i);
  return rows;
}

Matrix gather(const EmbeddingSet& set, const std::vector<std::size_t>& rows) {
  Matrix m(rows.size(), set.vectors.cols);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const float* src = set.vectors.row(rows[i]);
    std::copy(src, src + m.cols, m.row(i));
  }
  return m;
}

}  // namespace

ProjectionRouting projection_routing(const Projection& projection, std::size_t dim) {
  ProjectionRouting out;
  const std::size_t heads = projection.heads.size();
  const StudentTensor* sub_keys = nullptr;
  const StudentTensor* sub_key_heads = nullptr;
  for (const StudentTensor& t : projection.tensors) {
    if (t.name == "sub_keys") sub_keys = &t;
    if (t.name == "sub_key_heads") sub_key_heads = &t;
    if (t.name == "query_adapter") {
      if (t.values.size() != dim * dim) throw Error("projection \"" + projection.name + "\": malformed query adapter");
      out.adapter = Matrix(dim, dim);
      out.adapter.data = t.values;
    }
  }
  if (sub_keys && sub_key_heads) {
    const std::size_t n = sub_key_heads->values.size();
    if (sub_keys->values.size() != n * dim) throw Error("projection \"" + projection.name + "\": malformed sub-keys");
    out.keys = Matrix(n, dim);
    out.keys.data = sub_keys->values;
    for (float h : sub_key_heads->values) {
      if (!(h >= 0) || h >= static_cast<float>(heads)) {
        throw Error("projection \"" + projection.name + "\": a sub-key names a head it does not have");
      }
      out.head_of_key.push_back(static_cast<std::size_t>(h));
    }
    out.has_sub_keys = true;
  } else {
    out.keys = Matrix(heads, dim);
    for (std::size_t h = 0; h < heads; ++h) {
      std::copy(projection.heads[h].centroid.begin(), projection.heads[h].centroid.end(), out.keys.row(h));
      out.head_of_key.push_back(h);
    }
  }
  out.answers = Matrix(out.keys.rows, dim);
  for (std::size_t k = 0; k < out.keys.rows; ++k) {
    const auto& answer = projection.heads[out.head_of_key[k]].answer;
    if (answer.size() != dim) throw Error("projection \"" + projection.name + "\": a head has the wrong dimension");
    std::copy(answer.begin(), answer.end(), out.answers.row(k));
  }
  return out;
}

namespace {

nlohmann::json trial_json(const TuningTrial& t) {
  return {{"temperature", t.temperature}, {"key_epochs", t.key_epochs}, {"recall_at_1", t.recall_at_1},
          {"mrr_at_10", t.mrr_at_10}};
}

nlohmann::json tuning_metrics(const TuningReport& tuning) {
  nlohmann::json out{{"tuned", tuning.tuned}, {"note", tuning.note}, {"seconds", tuning.seconds}};
  if (!tuning.tuned) return out;
  out["validation"] = {{"source", tuning.source}, {"queries", tuning.validation_queries}, {"folds", tuning.folds},
                       {"seed", tuning.seed}};
  out["chosen"] = trial_json(tuning.chosen);
  out["trials"] = nlohmann::json::array();
  for (const TuningTrial& t : tuning.trials) out["trials"].push_back(trial_json(t));
  return out;
}

}  // namespace

std::string tuning_metrics_json(const TuningReport& tuning) { return tuning_metrics(tuning).dump(); }

TeacherTrainReport train_teacher(Store& store, const std::string& model_name,
                                 const TeacherTrainOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  auto say = [&](const std::string& line) {
    if (options.on_progress) options.on_progress(line);
  };
  if (options.keys_per_head == 0) throw InputError("--keys-per-head must be at least 1");
  if (options.query_adapter && options.key_epochs && *options.key_epochs == 0) {
    throw InputError("--query-adapter is learned together with the keys; give --learn-keys N (N > 0) too");
  }
  if (options.query_adapter && !options.key_epochs && !options.tune) {
    throw InputError("--query-adapter is learned together with the keys; give --learn-keys N (N > 0) too");
  }
  if (options.temperature && (!(*options.temperature > 0.0f) || !std::isfinite(*options.temperature))) {
    throw InputError("--temperature must be a positive number, got " + std::to_string(*options.temperature));
  }
  const auto model = store.find_model(model_name);
  if (!model) {
    throw InputError("no embeddings for model \"" + model_name + "\" in " +
                     store.path().string() + "; run `ldaproj embed --db " +
                     store.path().string() + "` first");
  }
  const auto pending_q = store.missing_embeddings(model->id, EntityKind::Question).size();
  const auto pending_a = store.missing_embeddings(model->id, EntityKind::Answer).size();
  if (pending_q + pending_a > 0) {
    throw InputError(std::to_string(pending_q) + " questions and " + std::to_string(pending_a) +
                     " answers have no \"" + model_name + "\" embedding yet; run `ldaproj embed --db " +
                     store.path().string() + "` first");
  }
  const bool tune = options.tune && (!options.temperature || !options.key_epochs);
  const StoreStats counts = store.stats();
  {
    // Refuse before any work what cannot fit: the embeddings (read, then
    // gathered by head), the keys and what learning them takes.
    const std::size_t d = model->dim, m = static_cast<std::size_t>(counts.questions),
                      n = static_cast<std::size_t>(counts.clusters) * options.keys_per_head;
    std::size_t need = (2 * m + 2 * static_cast<std::size_t>(counts.answers)) * d * sizeof(float) +
                       3 * static_cast<std::size_t>(counts.clusters) * d * sizeof(float);
    const bool may_learn = options.key_epochs.value_or(tune ? 1 : 0) > 0;
    if (may_learn) {
      KeyLearningOptions learning;
      learning.threads = options.threads;
      learning.candidates = options.key_candidates;
      need += key_learning_memory(n, m, d, options.query_adapter, learning);
      if (tune) need += m * d * sizeof(float) * 2;  // a fold's questions and their unit copy
    }
    const std::size_t available = detail::available_memory_bytes();
    if (available > 0 && need > available) {
      throw InputError("training " + std::to_string(counts.clusters) + " clusters with " + std::to_string(m) +
                       " questions needs about " + detail::gigabytes(need) + " of memory and " + detail::gigabytes(available) +
                       " is available" + (may_learn ? "; --threads 1 or --learn-keys 0 (centroid keys) needs less" : ""));
    }
  }

  say("loading embeddings");
  EmbeddingSet q_emb = store.embeddings(model->id, EntityKind::Question);
  EmbeddingSet a_emb = store.embeddings(model->id, EntityKind::Answer);
  // What this projection was trained on, for Store::staleness: rows added
  // or re-worded later get larger ids.
  const nlohmann::json trained_on{
      {"last_question_id", q_emb.ids.empty() ? 0 : *std::max_element(q_emb.ids.begin(), q_emb.ids.end())},
      {"last_answer_id", a_emb.ids.empty() ? 0 : *std::max_element(a_emb.ids.begin(), a_emb.ids.end())}};
  const auto q_row = row_of(q_emb);
  const auto a_row = row_of(a_emb);

  struct Group {
    std::vector<std::size_t> questions, preferred_answers, other_answers;
  };
  std::map<std::int64_t, Group> groups;
  for (const Question& q : store.questions()) {
    if (auto it = q_row.find(q.id); it != q_row.end()) groups[q.cluster_id].questions.push_back(it->second);
  }
  for (const Answer& a : store.answers()) {
    auto it = a_row.find(a.id);
    if (it == a_row.end()) continue;
    Group& g = groups[a.cluster_id];
    if (a.variant == "default" || a.variant == model_name) {
      g.preferred_answers.push_back(it->second);
    } else {
      g.other_answers.push_back(it->second);
    }
  }

  TeacherTrainReport report;
  report.name = options.name.empty() ? "multi_head_" + model_name : options.name;
  // Refused before any work rather than after minutes of training; the save
  // checks again in its transaction.
  if (options.existing == ExistingProjection::Refuse) {
    for (const Projection& p : store.projections()) {
      if (p.name != report.name) continue;
      bool student = false, ensemble = false;
      for (const StoredStudent& s : store.students()) student = student || s.projection == p.name;
      for (const StoredEnsemble& e : store.ensembles()) ensemble = ensemble || e.projection == p.name;
      const std::string holds = student && ensemble ? "its student and ensemble"
                                : student           ? "its student"
                                : ensemble          ? "its ensemble"
                                                    : "";
      throw InputError("a projection named \"" + p.name + "\" already exists in " + store.path().string() +
                       (holds.empty() ? "" : " with " + holds) + "; give another --name, or --replace to replace it" +
                       (holds.empty() ? "" : " (dropping " + holds + ")") + "; nothing was trained");
    }
  }
  Projection projection;
  projection.name = report.name;
  projection.model = model_name;
  projection.centroid_method = std::string(to_string(options.centroid_method));

  std::unordered_map<std::int64_t, std::string> external;
  for (const Cluster& c : store.clusters()) external.emplace(c.id, c.external_id);

  // The training questions grouped by head (rows of `questions`), and each
  // head's answer embedding.
  const std::size_t dim = model->dim;
  Matrix questions(0, dim);
  std::vector<std::size_t> head_of_question;
  std::vector<std::size_t> first_row;  // per head: its first row in `questions`
  for (auto& [cluster_id, g] : groups) {
    const std::string& name = external[cluster_id];
    if (g.questions.empty()) {
      report.warnings.push_back("cluster \"" + name + "\" has no questions; skipped");
      continue;
    }
    // The default answer and the variant written for this model describe the
    // same answer; other variants (for other models) are a last resort.
    const auto& answer_rows = g.preferred_answers.empty() ? g.other_answers : g.preferred_answers;
    if (answer_rows.empty()) {
      report.warnings.push_back("cluster \"" + name + "\" has no answer; skipped");
      continue;
    }
    if (g.preferred_answers.empty()) {
      report.warnings.push_back("cluster \"" + name + "\" has no \"default\" or \"" + model_name +
                                "\" answer; using its other variants");
    }
    const Matrix mine = gather(q_emb, g.questions);
    Head head;
    head.cluster_id = cluster_id;
    head.centroid = compute_centroid(mine, options.centroid_method);
    head.answer = compute_centroid(gather(a_emb, answer_rows), CentroidMethod::Mean);
    head.num_questions = static_cast<std::int64_t>(g.questions.size());
    first_row.push_back(questions.rows);
    questions.data.insert(questions.data.end(), mine.data.begin(), mine.data.end());
    questions.rows += mine.rows;
    head_of_question.insert(head_of_question.end(), mine.rows, projection.heads.size());
    report.questions += g.questions.size();
    projection.heads.push_back(std::move(head));
  }
  if (projection.heads.empty()) {
    throw InputError("no cluster in " + store.path().string() +
                     " has both questions and an answer; import data first");
  }
  q_emb = EmbeddingSet{};  // the rows now live in `questions`
  a_emb = EmbeddingSet{};
  // Unit rows once here, so the tuning and the key learning need no copies.
  normalize_rows(questions, "question embedding");
  first_row.push_back(questions.rows);
  report.heads = projection.heads.size();
  Matrix head_answers(report.heads, dim);
  for (std::size_t h = 0; h < report.heads; ++h) {
    std::copy(projection.heads[h].answer.begin(), projection.heads[h].answer.end(), head_answers.row(h));
  }

  // Held-out data: a validation file given by the caller (queries of known
  // clusters only), else a slice of the training questions.
  HeldOutQueries validation;
  if (options.validation) {
    std::unordered_map<std::string, std::size_t> head_of_cluster;
    for (std::size_t h = 0; h < report.heads; ++h) head_of_cluster.emplace(external[projection.heads[h].cluster_id], h);
    const ValidationSet& v = *options.validation;
    if (v.clusters.size() != v.queries.rows) throw InputError("validation: one cluster per query");
    std::size_t skipped = 0;
    validation.queries = Matrix(0, dim);
    for (std::size_t i = 0; i < v.clusters.size(); ++i) {
      auto it = head_of_cluster.find(v.clusters[i]);
      if (it == head_of_cluster.end()) {
        ++skipped;
        continue;
      }
      validation.queries.data.insert(validation.queries.data.end(), v.queries.row(i), v.queries.row(i) + dim);
      ++validation.queries.rows;
      validation.heads.push_back(it->second);
    }
    if (skipped > 0) {
      report.warnings.push_back(std::to_string(skipped) +
                                " validation queries are out of scope or name no trained cluster; not used");
    }
    if (validation.queries.rows == 0) {
      throw InputError("the validation queries name none of the " + std::to_string(report.heads) +
                       " trained clusters");
    }
  }

  float temperature = options.temperature.value_or(options.tune ? default_temperature_for(report.heads)
                                                                 : kDefaultTemperature);
  std::size_t key_epochs = options.key_epochs.value_or(0);
  if (tune) {
    TuningOptions t;
    t.slice = options.slice;
    t.temperature = options.temperature;
    t.key_epochs = options.key_epochs;
    t.centroid_method = options.centroid_method;
    t.keys_per_head = options.keys_per_head;
    t.query_adapter = options.query_adapter;
    t.learning.lr = options.key_lr;
    t.learning.adapter_lr = options.adapter_lr;
    t.learning.adapter_decay = options.adapter_decay;
    t.learning.candidates = options.key_candidates;
    t.validation = options.validation ? &validation : nullptr;
    t.threads = options.threads;
    t.on_progress = options.on_progress;
    report.tuning = tune_teacher(questions, head_of_question, head_answers, t);
    if (!report.tuning.tuned) report.warnings.push_back("not tuned: " + report.tuning.note);
    temperature = report.tuning.chosen.temperature;
    key_epochs = report.tuning.chosen.key_epochs;
    if (options.query_adapter && key_epochs == 0) key_epochs = kTuningKeyEpochs[0];
  }
  report.temperature = temperature;
  projection.temperature = temperature;

  nlohmann::json metrics{{"heads", report.heads}, {"questions", report.questions}, {"warnings", report.warnings.size()},
                         {"temperature", temperature}};
  if (options.tune) metrics["tuning"] = tune ? tuning_metrics(report.tuning) : nlohmann::json{{"tuned", false},
                                                                                              {"note", "every setting was given"}};
  const std::size_t per_head = options.keys_per_head;
  if (key_epochs > 0 || per_head > 1) {
    Matrix keys(0, dim);
    std::vector<std::size_t> head_of_key;
    for (std::size_t h = 0; h < projection.heads.size(); ++h) {
      if (per_head > 1) {
        Matrix mine(first_row[h + 1] - first_row[h], dim);
        std::copy(questions.row(first_row[h]), questions.row(first_row[h + 1]), mine.data.begin());
        const Matrix sub = kmeans_sub_keys(mine, per_head);
        keys.data.insert(keys.data.end(), sub.data.begin(), sub.data.end());
        keys.rows += sub.rows;
        head_of_key.insert(head_of_key.end(), sub.rows, h);
      } else {
        keys.data.insert(keys.data.end(), projection.heads[h].centroid.begin(), projection.heads[h].centroid.end());
        ++keys.rows;
        head_of_key.push_back(h);
      }
    }
    Matrix adapter;
    if (key_epochs > 0) {
      KeyLearningOptions learning{key_epochs, options.key_lr, options.adapter_lr, options.adapter_decay};
      learning.candidates = options.key_candidates;
      learning.threads = options.threads;
      // A line a second at most (and the last epoch), so small stores do not flood the terminal.
      double last_line = -1;
      learning.on_epoch = [&](const KeyLearningProgress& p) {
        if (p.epoch != p.epochs && p.seconds - last_line < 1.0) return;
        last_line = p.seconds;
        char line[160];
        std::snprintf(line, sizeof line, "learning keys: epoch %zu/%zu, loss %.4f, routed to own head %.1f%%, %.1fs%s",
                      p.epoch, p.epochs, p.loss, 100 * p.accuracy, p.seconds,
                      p.refreshed ? " (competitors searched again)" : "");
        say(line);
      };
      if (tune) say("refitting on all " + std::to_string(questions.rows) + " questions");
      report.keys = learn_keys(keys, head_of_key, options.query_adapter ? &adapter : nullptr, questions,
                               head_of_question, temperature, learning);
      metrics["learned_keys"] = {{"epochs", report.keys.epochs}, {"lr", options.key_lr},
                                 {"initial_accuracy", report.keys.initial_accuracy},
                                 {"final_accuracy", report.keys.final_accuracy},
                                 {"initial_loss", report.keys.initial_loss}, {"final_loss", report.keys.final_loss},
                                 {"exact", report.keys.exact}, {"candidates", report.keys.candidates},
                                 {"seconds", report.keys.seconds}};
    }
    if (per_head > 1) {
      // The heads keep their question centroids for whatever reads one key
      // per head (domains, distill); the teacher routes with the sub-keys.
      const auto rows_of_keys = static_cast<std::int64_t>(keys.rows);
      projection.tensors.push_back({"sub_keys", {rows_of_keys, static_cast<std::int64_t>(dim)}, keys.data});
      projection.tensors.push_back(
          {"sub_key_heads", {rows_of_keys}, std::vector<float>(head_of_key.begin(), head_of_key.end())});
      metrics["keys_per_head"] = per_head;
    } else {
      for (std::size_t h = 0; h < projection.heads.size(); ++h) {
        projection.heads[h].centroid.assign(keys.row(h), keys.row(h) + dim);
      }
    }
    if (options.query_adapter) {
      const auto d = static_cast<std::int64_t>(dim);
      projection.tensors.push_back({"query_adapter", {d, d}, adapter.data});
      double norm = 0;
      for (float v : adapter.data) norm += double(v) * v;
      metrics["query_adapter"] = {{"lr", options.adapter_lr}, {"decay", options.adapter_decay},
                                  {"frobenius_norm", std::sqrt(norm)}};
    }
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  metrics["seconds"] = report.seconds;
  metrics["trained_on"] = trained_on;
  projection.metrics_json = metrics.dump();
  say("saving the projection");
  report.saved = store.save_projection_as(projection, options.existing);
  report.projection_id = report.saved.id;
  report.name = report.saved.name;
  return report;
}

}  // namespace ldaproj
