// Teacher training: groups stored embeddings by cluster, builds one head per
// cluster (centroid + answer embedding), optionally learns discriminative
// keys (or several sub-keys per head, and a query adapter) from the
// questions, and saves them as a projection; and how a stored projection's
// keys, answers and adapter are laid out for routing (projection_routing).
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

TeacherTrainReport train_teacher(Store& store, const std::string& model_name,
                                 const TeacherTrainOptions& options) {
  if (options.keys_per_head == 0) throw InputError("--keys-per-head must be at least 1");
  if (options.query_adapter && options.key_epochs == 0) {
    throw InputError("--query-adapter is learned together with the keys; give --learn-keys N (N > 0) too");
  }
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
  const std::size_t per_head = options.keys_per_head;
  if (options.key_epochs > 0 || per_head > 1) {
    const std::size_t dim = projection.heads.front().centroid.size();
    Matrix keys(0, dim);
    std::vector<std::size_t> head_of_key, rows, head_of;
    for (std::size_t h = 0; h < projection.heads.size(); ++h) {
      if (per_head > 1) {
        const Matrix sub = kmeans_sub_keys(gather(q_emb, head_groups[h]->questions), per_head);
        keys.data.insert(keys.data.end(), sub.data.begin(), sub.data.end());
        keys.rows += sub.rows;
        head_of_key.insert(head_of_key.end(), sub.rows, h);
      } else {
        keys.data.insert(keys.data.end(), projection.heads[h].centroid.begin(), projection.heads[h].centroid.end());
        ++keys.rows;
        head_of_key.push_back(h);
      }
      for (std::size_t r : head_groups[h]->questions) {
        rows.push_back(r);
        head_of.push_back(h);
      }
    }
    Matrix adapter;
    if (options.key_epochs > 0) {
      KeyLearningOptions learning{options.key_epochs, options.key_lr, options.adapter_lr, options.adapter_decay};
      report.keys = learn_keys(keys, head_of_key, options.query_adapter ? &adapter : nullptr, gather(q_emb, rows),
                               head_of, options.temperature, learning);
      metrics["learned_keys"] = {{"epochs", report.keys.epochs}, {"lr", options.key_lr},
                                 {"initial_accuracy", report.keys.initial_accuracy},
                                 {"final_accuracy", report.keys.final_accuracy},
                                 {"initial_loss", report.keys.initial_loss}, {"final_loss", report.keys.final_loss}};
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
  projection.metrics_json = metrics.dump();
  report.projection_id = store.save_projection(projection);
  return report;
}

}  // namespace ldaproj
