// Distilling a stored projection and keeping its student in the store: reads
// the teacher and its questions, runs distill_student and saves the result
// tied to the projection.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "ldaproj/distill.hpp"
#include "ldaproj/error.hpp"

namespace ldaproj {

namespace {

Projection require_projection(const Store& store, const std::string& name) {
  auto projection = store.load_projection(name);
  if (!projection) {
    throw InputError(name.empty() ? "no trained projection in " + store.path().string() + "; run `ldaproj train --db " +
                                        store.path().string() + "` first"
                                  : "no projection named \"" + name + "\" in " + store.path().string());
  }
  return std::move(*projection);
}

}  // namespace

ProjectionTeacher load_projection_teacher(const Store& store, const std::string& projection_name) {
  ProjectionTeacher out;
  out.projection = require_projection(store, projection_name);
  const Projection& projection = out.projection;
  if (!projection.tensors.empty()) {
    // Students and ensembles learn one key per head from a teacher without an adapter.
    throw InputError("projection \"" + projection.name + "\" routes with sub-keys or a query adapter (train "
                     "--keys-per-head/--query-adapter), which distill and ensemble do not support yet; name a "
                     "projection trained without them with --projection");
  }
  const auto model = store.find_model(projection.model);
  if (!model) throw Error("projection \"" + projection.name + "\" refers to unknown model " + projection.model);
  const std::size_t dim = model->dim;

  Matrix centroids(projection.heads.size(), dim), answers(projection.heads.size(), dim);
  std::unordered_map<std::int64_t, std::size_t> head_of_cluster;
  for (std::size_t h = 0; h < projection.heads.size(); ++h) {
    const Head& head = projection.heads[h];
    std::copy(head.centroid.begin(), head.centroid.end(), centroids.row(h));
    std::copy(head.answer.begin(), head.answer.end(), answers.row(h));
    head_of_cluster.emplace(head.cluster_id, h);
  }
  out.teacher = MultiHeadProjection(std::move(centroids), std::move(answers), projection.temperature);

  const EmbeddingSet q_emb = store.embeddings(model->id, EntityKind::Question);
  std::unordered_map<std::int64_t, std::size_t> row_of_question;
  for (std::size_t i = 0; i < q_emb.ids.size(); ++i) row_of_question.emplace(q_emb.ids[i], i);
  out.questions = Matrix(0, dim);
  for (const Question& q : store.questions()) {
    const auto row = row_of_question.find(q.id);
    const auto head = head_of_cluster.find(q.cluster_id);
    if (row == row_of_question.end() || head == head_of_cluster.end()) continue;
    out.questions.data.insert(out.questions.data.end(), q_emb.vectors.row(row->second),
                              q_emb.vectors.row(row->second) + dim);
    ++out.questions.rows;
    out.head_of_question.push_back(head->second);
  }
  if (out.questions.rows == 0) {
    throw InputError("projection \"" + projection.name + "\" has no embedded questions to distil from; run `ldaproj embed --db " +
                     store.path().string() + "`");
  }
  normalize_rows(out.questions, "question embedding");
  return out;
}

StoreDistillReport distill_projection(Store& store, const std::string& projection_name, const DistillOptions& options,
                                      const DistillObserver& observer) {
  const auto started = std::chrono::steady_clock::now();
  const ProjectionTeacher loaded = load_projection_teacher(store, projection_name);
  if (observer.on_phase) {
    char line[160];
    std::snprintf(line, sizeof line, "loaded the teacher: %zu heads, %zu questions (%.1fs)", loaded.teacher.num_heads(),
                  loaded.questions.rows,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    observer.on_phase(line);
  }
  const Projection& projection = loaded.projection;
  const MultiHeadProjection& teacher = loaded.teacher;
  const std::size_t dim = teacher.dim();

  DistillOptions o = options;
  o.config.dim = dim;
  StoreDistillReport out;
  out.projection = projection.name;
  out.report = distill_student(teacher, loaded.questions, loaded.head_of_question, o, observer);
  const DistillReport& r = out.report;

  const DistillEpoch* best = nullptr;
  for (const auto& e : r.history)
    if (e.epoch == r.best_epoch) best = &e;
  nlohmann::json metrics{{"teacher_temperature", projection.temperature},
                         {"teacher_heads", teacher.num_heads()},
                         {"parameters", r.weights.parameter_count()},
                         {"init", std::string(to_string(o.init))},
                         {"keys_only", o.keys_only},
                         {"attention_gain", r.attention_gain},
                         {"epochs_run", r.history.size()},
                         {"best_epoch", r.best_epoch},
                         {"train_samples", r.train_samples},
                         {"validation_questions", r.validation_questions},
                         {"initial_validation_cosine", r.initial_validation_cosine},
                         {"validation_cosine", best ? best->validation_cosine : r.initial_validation_cosine},
                         {"seconds", r.seconds},
                         {"per_source", r.per_source},
                         {"lr", o.lr},
                         {"loss_weights", {{"mse", o.mse_weight}, {"cosine", o.cosine_weight}, {"kl", o.kl_weight},
                                           {"answer", o.answer_weight}}},
                         {"seed", o.seed}};
  StoredStudent student;
  student.projection = projection.name;
  student.weights = r.weights;
  student.metrics_json = metrics.dump();
  // The teacher as loaded before training: if the projection was replaced
  // meanwhile, save_student refuses the student instead of mixing them.
  student.teacher_fingerprint = projection.fingerprint;
  store.save_student(student);
  return out;
}

std::optional<StudentWeights> load_student_weights(const Store& store, const std::string& projection_name) {
  auto student = store.load_student(projection_name);
  if (!student) return std::nullopt;
  return std::move(student->weights);
}

}  // namespace ldaproj
