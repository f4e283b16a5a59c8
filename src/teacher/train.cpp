// Teacher training: groups stored embeddings by cluster, builds one head per
// cluster (centroid + answer embedding), optionally learns discriminative
// keys from the questions, and saves them as a projection.
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>

#include "ldaproj/error.hpp"
#include "ldaproj/train.hpp"

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

TeacherTrainReport train_teacher(Store& store, const std::string& model_name,
                                 const TeacherTrainOptions& options) {
  if (!(options.temperature > 0.0f) || !std::isfinite(options.temperature)) {
    throw InputError("--temperature must be a positive number, got " +
                     std::to_string(options.temperature));
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

  const EmbeddingSet q_emb = store.embeddings(model->id, EntityKind::Question);
  const EmbeddingSet a_emb = store.embeddings(model->id, EntityKind::Answer);
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
  Projection projection;
  projection.name = report.name;
  projection.model = model_name;
  projection.temperature = options.temperature;
  projection.centroid_method = std::string(to_string(options.centroid_method));

  std::vector<const Group*> head_groups;
  std::unordered_map<std::int64_t, std::string> external;
  for (const Cluster& c : store.clusters()) external.emplace(c.id, c.external_id);

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
    Head head;
    head.cluster_id = cluster_id;
    head.centroid = compute_centroid(gather(q_emb, g.questions), options.centroid_method);
    head.answer = compute_centroid(gather(a_emb, answer_rows), CentroidMethod::Mean);
    head.num_questions = static_cast<std::int64_t>(g.questions.size());
    report.questions += g.questions.size();
    projection.heads.push_back(std::move(head));
    head_groups.push_back(&g);
  }
  if (projection.heads.empty()) {
    throw InputError("no cluster in " + store.path().string() +
                     " has both questions and an answer; import data first");
  }
  report.heads = projection.heads.size();
  nlohmann::json metrics{{"heads", report.heads}, {"questions", report.questions}, {"warnings", report.warnings.size()}};
  if (options.key_epochs > 0) {
    const std::size_t dim = projection.heads.front().centroid.size();
    Matrix keys(projection.heads.size(), dim);
    std::vector<std::size_t> rows, head_of;
    for (std::size_t h = 0; h < projection.heads.size(); ++h) {
      std::copy(projection.heads[h].centroid.begin(), projection.heads[h].centroid.end(), keys.row(h));
      for (std::size_t r : head_groups[h]->questions) {
        rows.push_back(r);
        head_of.push_back(h);
      }
    }
    report.keys = learn_keys(keys, gather(q_emb, rows), head_of, options.temperature,
                             KeyLearningOptions{options.key_epochs, options.key_lr});
    for (std::size_t h = 0; h < projection.heads.size(); ++h) {
      projection.heads[h].centroid.assign(keys.row(h), keys.row(h) + dim);
    }
    metrics["learned_keys"] = {{"epochs", report.keys.epochs}, {"lr", options.key_lr},
                               {"initial_accuracy", report.keys.initial_accuracy},
                               {"final_accuracy", report.keys.final_accuracy},
                               {"initial_loss", report.keys.initial_loss}, {"final_loss", report.keys.final_loss}};
  }
  projection.metrics_json = metrics.dump();
  report.projection_id = store.save_projection(projection);
  return report;
}

}  // namespace ldaproj
