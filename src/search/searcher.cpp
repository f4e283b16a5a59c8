// Loads a trained projection, its student and the answer corpus from the
// store and answers query embeddings by any method (multi-head, student,
// ensemble, sparse-teacher, question-routing, direct, global-w), with
// optional out-of-scope rejection by confidence.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <mutex>
#include <numeric>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "common/gemm.hpp"
#include "ldaproj/ensemble.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/index.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/student.hpp"
#include "ldaproj/teacher.hpp"
#include "ldaproj/train.hpp"

namespace ldaproj {

std::string_view to_string(Method method) {
  switch (method) {
    case Method::MultiHead: return "multi-head";
    case Method::Direct: return "direct";
    case Method::GlobalW: return "global-w";
    case Method::SparseTeacher: return "sparse-teacher";
    case Method::Student: return "student";
    case Method::Ensemble: return "ensemble";
    case Method::QuestionRouting: return "question-routing";
  }
  return "?";
}

Method parse_method(std::string_view name) {
  std::string n(name);
  std::replace(n.begin(), n.end(), '_', '-');
  if (n == "multi-head" || n == "multihead") return Method::MultiHead;
  if (n == "direct") return Method::Direct;
  if (n == "global-w") return Method::GlobalW;
  if (n == "sparse-teacher" || n == "sparse") return Method::SparseTeacher;
  if (n == "student") return Method::Student;
  if (n == "ensemble") return Method::Ensemble;
  if (n == "question-routing" || n == "questions") return Method::QuestionRouting;
  throw InputError("unknown method \"" + std::string(name) +
                   "\"; expected multi-head, student, ensemble, sparse-teacher, question-routing, direct or global-w");
}

struct Searcher::Impl {
  std::string projection_name;
  std::string model_name;
  std::vector<std::int64_t> head_clusters;  // head index -> cluster id
  // The teacher's rows are keys: one per head, or several (sub-keys); each
  // key's head. Queries go through the adapter (0 x 0: none) first.
  MultiHeadProjection teacher;
  std::vector<std::size_t> head_of_key;
  bool has_sub_keys = false;
  Matrix adapter;
  Matrix head_centroids, head_answer_rows;  // per head, as stored
  StudentModel student;  // empty when none was distilled
  EnsembleModel ensemble;  // empty when none was trained
  std::optional<Provenance> student_provenance, ensemble_provenance;
  std::string fingerprint_id;
  std::unique_ptr<Index> answer_index;
  Matrix answer_corpus;  // kept only for an approximate index, to measure its recall
  std::vector<std::int64_t> answer_labels;
  std::vector<Answer> answers;  // index label -> answer
  std::size_t max_answers_per_cluster = 1;
  std::unordered_map<std::int64_t, std::string> cluster_names;

  // question-routing loads every (unit) question embedding on first use,
  // with the head each belongs to.
  mutable std::once_flag questions_once;
  mutable Matrix question_vectors;
  mutable std::vector<std::size_t> question_head;
  mutable Matrix head_answers;  // the teacher's answers as one matrix

  // global-w is fitted on first use: it needs every question embedding.
  const Store* store = nullptr;
  std::int64_t model_id = 0;
  CentroidMethod centroid_method = CentroidMethod::Mean;  // how the projection made its centroids
  mutable std::once_flag global_once;
  mutable GlobalProjection global;
  mutable std::string global_error;

  // The sparse teacher's centroid graph is built on first use.
  mutable std::once_flag sparse_once;
  mutable std::unique_ptr<SparseMultiHeadProjection> sparse_teacher;
  const SparseMultiHeadProjection& sparse() const {
    std::call_once(sparse_once, [this] { sparse_teacher = std::make_unique<SparseMultiHeadProjection>(teacher); });
    return *sparse_teacher;
  }

  // Queries as the teacher routes them (through its adapter, when it has one).
  Matrix teacher_queries(const Matrix& queries) const {
    return adapter.rows == 0 ? queries : adapt_queries(adapter, queries);
  }

  // Per-key columns (queries x keys) to per-head ones: weights add up,
  // similarities take the best key. Unchanged with one key per head.
  Matrix per_head(Matrix per_key, bool add) const {
    if (!has_sub_keys) return per_key;
    Matrix out(per_key.rows, head_clusters.size());
    if (!add) std::fill(out.data.begin(), out.data.end(), -2.0f);
    for (std::size_t q = 0; q < per_key.rows; ++q) {
      for (std::size_t k = 0; k < per_key.cols; ++k) {
        float& o = out(q, head_of_key[k]);
        o = add ? o + per_key(q, k) : std::max(o, per_key(q, k));
      }
    }
    return out;
  }

  void load_questions() const {
    std::call_once(questions_once, [this] {
      const EmbeddingSet q = store->embeddings(model_id, EntityKind::Question);
      std::unordered_map<std::int64_t, std::size_t> row;
      for (std::size_t i = 0; i < q.ids.size(); ++i) row.emplace(q.ids[i], i);
      std::unordered_map<std::int64_t, std::size_t> head_of;
      for (std::size_t h = 0; h < head_clusters.size(); ++h) head_of.emplace(head_clusters[h], h);
      Matrix vectors(0, teacher.dim());
      for (const Question& question : store->questions()) {
        auto r = row.find(question.id);
        auto h = head_of.find(question.cluster_id);
        if (r == row.end() || h == head_of.end()) continue;
        vectors.data.insert(vectors.data.end(), q.vectors.row(r->second), q.vectors.row(r->second) + vectors.cols);
        ++vectors.rows;
        question_head.push_back(h->second);
      }
      if (vectors.rows > 0) normalize_rows(vectors, "question embedding");
      question_vectors = std::move(vectors);
      head_answers = head_answer_rows;
    });
    if (question_vectors.rows == 0) {
      throw InputError("question-routing needs the training questions' embeddings; none of the projection's "
                       "clusters has any (run `ldaproj embed`)");
    }
  }

  // Routing over individual questions for unit queries: head weights
  // (queries x heads, rows sum to one) and each head's best question cosine.
  void route_questions(const Matrix& unit_queries, float temperature, std::size_t neighbors, Matrix& weights,
                       Matrix& best_similarity) const {
    load_questions();
    const std::size_t m = question_vectors.rows, heads = head_clusters.size();
    weights = Matrix(unit_queries.rows, heads);
    best_similarity = Matrix(unit_queries.rows, heads);
    std::fill(best_similarity.data.begin(), best_similarity.data.end(), -2.0f);
    const std::size_t k = neighbors == 0 ? m : std::min(neighbors, m);
    // Blocks of queries keep the queries x questions scores near 64 MiB.
    const std::size_t block = std::max<std::size_t>(1, std::min<std::size_t>(256, (std::size_t{1} << 24) / m));
    std::vector<std::size_t> order(m);
    for (std::size_t begin = 0; begin < unit_queries.rows; begin += block) {
      const std::size_t end = std::min(unit_queries.rows, begin + block);
      Matrix chunk(end - begin, unit_queries.cols);
      std::copy(unit_queries.row(begin), unit_queries.row(begin) + chunk.data.size(), chunk.data.begin());
      Matrix scores;
      detail::gemm_abt(chunk, question_vectors, scores);
      for (std::size_t r = 0; r < chunk.rows; ++r) {
        const float* srow = scores.row(r);
        float* w = weights.row(begin + r);
        float* best = best_similarity.row(begin + r);
        for (std::size_t j = 0; j < m; ++j) best[question_head[j]] = std::max(best[question_head[j]], srow[j]);
        for (std::size_t j = 0; j < m; ++j) order[j] = j;
        if (k < m) {
          std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k - 1), order.end(),
                           [srow](std::size_t a, std::size_t b) { return srow[a] > srow[b]; });
        }
        float top = -2.0f;
        for (std::size_t i = 0; i < k; ++i) top = std::max(top, srow[order[i]]);
        double total = 0;
        for (std::size_t i = 0; i < k; ++i) {
          const double e = std::exp(double(srow[order[i]] - top) / temperature);
          w[question_head[order[i]]] += static_cast<float>(e);
          total += e;
        }
        for (std::size_t h = 0; h < heads; ++h) w[h] = static_cast<float>(w[h] / total);
      }
    }
  }

  Matrix project_over_questions(const Matrix& queries, float temperature, std::size_t neighbors,
                                Matrix* weights_out = nullptr, Matrix* similarity_out = nullptr) const {
    Matrix unit = queries;
    normalize_rows(unit, "query");
    Matrix weights, similarity;
    route_questions(unit, temperature, neighbors, weights, similarity);
    Matrix projected;
    detail::gemm_ab(weights, head_answers, projected);
    normalize_rows(projected, "projected query");
    if (weights_out) *weights_out = std::move(weights);
    if (similarity_out) *similarity_out = std::move(similarity);
    return projected;
  }

  // The teacher's projection with the blends of SearchOptions; `weights_out`
  // (when given) gets the per-head routing weights it used.
  Matrix blended_teacher(const Matrix& queries, float temperature, const SearchOptions& options,
                         Matrix* weights_out) const {
    const float b = options.blend_questions, g = options.blend_direct;
    Matrix projected, weights;
    if (b == 0.0f) {
      projected = teacher.project(teacher_queries(queries), temperature, weights_out ? &weights : nullptr);
      if (weights_out) weights = per_head(std::move(weights), true);
    } else {
      teacher.project(teacher_queries(queries), temperature, &weights);
      weights = per_head(std::move(weights), true);
      Matrix unit = queries, by_questions, similarity;
      normalize_rows(unit, "query");
      route_questions(unit, options.question_temperature, options.question_neighbors, by_questions, similarity);
      for (std::size_t i = 0; i < weights.data.size(); ++i) {
        weights.data[i] = (1.0f - b) * weights.data[i] + b * by_questions.data[i];
      }
      detail::gemm_ab(weights, head_answer_rows, projected);
      normalize_rows(projected, "projected query");
    }
    if (g != 0.0f) {
      // Unit answers: a . ((1-g) p + g q) = (1-g) cos(p, a) + g cos(q, a), so ranking by the mix is the blend.
      Matrix unit = queries;
      normalize_rows(unit, "query");
      for (std::size_t i = 0; i < projected.data.size(); ++i) {
        projected.data[i] = (1.0f - g) * projected.data[i] + g * unit.data[i];
      }
      normalize_rows(projected, "blended query");
    }
    if (weights_out) *weights_out = std::move(weights);
    return projected;
  }

  const GlobalProjection& global_w() const {
    std::call_once(global_once, [this] {
      const Store::ReadSnapshot snapshot = store->read_snapshot();
      const EmbeddingSet q = store->embeddings(model_id, EntityKind::Question);
      std::unordered_map<std::int64_t, std::size_t> row;
      for (std::size_t i = 0; i < q.ids.size(); ++i) row.emplace(q.ids[i], i);
      std::unordered_map<std::int64_t, std::size_t> head_of;
      for (std::size_t h = 0; h < head_clusters.size(); ++h) head_of.emplace(head_clusters[h], h);
      std::vector<std::pair<std::size_t, std::size_t>> pairs;  // (question row, head)
      for (const Question& question : store->questions()) {
        auto r = row.find(question.id);
        auto h = head_of.find(question.cluster_id);
        if (r != row.end() && h != head_of.end()) pairs.emplace_back(r->second, h->second);
      }
      // The fit needs the question means, not the routing keys: learned keys
      // (train --learn-keys) are moved away from the means, so the centroids
      // are computed again from the questions the way training did.
      const std::size_t dim = teacher.dim();
      std::vector<Matrix> per_head(head_clusters.size(), Matrix(0, dim));
      for (const auto& [r, h] : pairs) {
        Matrix& m = per_head[h];
        m.data.insert(m.data.end(), q.vectors.row(r), q.vectors.row(r) + dim);
        ++m.rows;
      }
      const Matrix& keys = head_centroids;
      Matrix centroids(head_clusters.size(), dim);
      for (std::size_t h = 0; h < head_clusters.size(); ++h) {
        // A head without stored questions (they were deleted after training) keeps its key.
        const std::vector<float> c =
            per_head[h].rows > 0 ? compute_centroid(per_head[h], centroid_method)
                                 : std::vector<float>(keys.row(h), keys.row(h) + dim);
        std::copy(c.begin(), c.end(), centroids.row(h));
      }
      Matrix residuals(pairs.size(), dim);
      for (std::size_t i = 0; i < pairs.size(); ++i) {
        Matrix one(1, dim);
        std::copy(q.vectors.row(pairs[i].first), q.vectors.row(pairs[i].first) + one.cols, one.row(0));
        normalize_rows(one, "question embedding");
        const float* c = centroids.row(pairs[i].second);
        for (std::size_t j = 0; j < one.cols; ++j) residuals(i, j) = one(0, j) - c[j];
      }
      global = GlobalProjection::fit(centroids, head_answer_rows, residuals);
    });
    return global;
  }
};

Searcher::Searcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Searcher::Searcher(Searcher&&) noexcept = default;
Searcher& Searcher::operator=(Searcher&&) noexcept = default;
Searcher::~Searcher() = default;

Searcher Searcher::load(const Store& store, const std::string& projection_name,
                        const SearcherOptions& searcher_options) {
  const TeacherOptions& teacher_options = searcher_options.teacher;
  // Projection, its student and ensemble, clusters, answers and their embeddings
  // from one committed state, so that a concurrent import or training run is
  // seen whole or not at all.
  const Store::ReadSnapshot snapshot = store.read_snapshot();
  auto projection = store.load_projection(projection_name);
  if (!projection) {
    throw InputError(projection_name.empty()
                         ? "no trained projection in " + store.path().string() +
                               "; run `ldaproj train --db " + store.path().string() + "` first"
                         : "no projection named \"" + projection_name + "\" in " +
                               store.path().string());
  }
  auto impl = std::make_unique<Impl>();
  impl->projection_name = projection->name;
  impl->model_name = projection->model;
  impl->store = &store;
  const auto model = store.find_model(projection->model);
  if (!model) throw Error("projection refers to unknown model " + projection->model);
  impl->model_id = model->id;
  impl->centroid_method =
      projection->centroid_method.empty() ? CentroidMethod::Mean : parse_centroid_method(projection->centroid_method);

  const std::size_t dim = model->dim;
  impl->head_centroids = Matrix(projection->heads.size(), dim);
  impl->head_answer_rows = Matrix(projection->heads.size(), dim);
  for (std::size_t h = 0; h < projection->heads.size(); ++h) {
    const Head& head = projection->heads[h];
    if (head.centroid.size() != dim || head.answer.size() != dim) {
      throw Error("head " + std::to_string(h) + " of projection " + projection->name +
                  " has the wrong dimension");
    }
    std::copy(head.centroid.begin(), head.centroid.end(), impl->head_centroids.row(h));
    std::copy(head.answer.begin(), head.answer.end(), impl->head_answer_rows.row(h));
    impl->head_clusters.push_back(head.cluster_id);
  }
  ProjectionRouting routing = projection_routing(*projection, dim);
  impl->head_of_key = std::move(routing.head_of_key);
  impl->has_sub_keys = routing.has_sub_keys;
  impl->adapter = std::move(routing.adapter);
  try {
    impl->teacher = MultiHeadProjection(std::move(routing.keys), std::move(routing.answers), projection->temperature,
                                        teacher_options);
  } catch (const InputError& e) {
    // Stored heads are checked when saved, so this is a damaged database.
    throw InputError("projection \"" + projection->name + "\" in " + store.path().string() +
                     " cannot be used: " + e.what() + "; train it again with `ldaproj train`");
  }
  if (auto student = store.load_student(projection->name)) {
    if (student->weights.config.dim != dim) {
      throw Error("the student of projection " + projection->name + " has dimension " +
                  std::to_string(student->weights.config.dim) + ", its model " + std::to_string(dim));
    }
    impl->student = StudentModel(student->weights);
    impl->student_provenance = student->provenance;
  }
  if (auto ensemble = load_ensemble_weights(store, projection->name)) {
    if (ensemble->config.dim != dim || ensemble->domain_of_head.size() != impl->head_clusters.size()) {
      throw Error("the ensemble of projection " + projection->name + " does not match its heads; train it again " +
                  "with `ldaproj ensemble`");
    }
    impl->ensemble = EnsembleModel(*ensemble);
    for (const StoredEnsemble& e : store.ensembles()) {
      if (e.projection == projection->name) impl->ensemble_provenance = e.provenance;
    }
  }
  if (projection->fingerprint) impl->fingerprint_id = projection->fingerprint->id;

  for (const Cluster& c : store.clusters()) impl->cluster_names.emplace(c.id, c.external_id);

  const EmbeddingSet a_emb = store.embeddings(model->id, EntityKind::Answer);
  std::unordered_map<std::int64_t, std::size_t> a_row;
  for (std::size_t i = 0; i < a_emb.ids.size(); ++i) a_row.emplace(a_emb.ids[i], i);
  std::unordered_map<std::int64_t, std::size_t> per_cluster;
  Matrix corpus(0, dim);
  std::vector<std::int64_t> labels;
  for (Answer& a : store.answers()) {
    auto it = a_row.find(a.id);
    if (it == a_row.end()) continue;
    corpus.data.insert(corpus.data.end(), a_emb.vectors.row(it->second),
                       a_emb.vectors.row(it->second) + dim);
    ++corpus.rows;
    labels.push_back(static_cast<std::int64_t>(impl->answers.size()));
    impl->max_answers_per_cluster = std::max(impl->max_answers_per_cluster, ++per_cluster[a.cluster_id]);
    impl->answers.push_back(std::move(a));
  }
  if (corpus.rows == 0) throw InputError("no answer has an embedding; run `ldaproj embed` first");
  normalize_rows(corpus, "answer embedding");
  if (corpus.rows >= searcher_options.approximate_answers_from) {
    impl->answer_index = std::make_unique<HnswIndex>(dim, searcher_options.answer_index);
    impl->answer_index->add(corpus, labels);
    impl->answer_corpus = std::move(corpus);
    impl->answer_labels = std::move(labels);
  } else {
    impl->answer_index = std::make_unique<FlatIndex>(dim);
    impl->answer_index->add(corpus, labels);
  }
  return Searcher(std::move(impl));
}

namespace {

// Rows [begin, end) of a matrix.
Matrix row_block(const Matrix& m, std::size_t begin, std::size_t end) {
  Matrix out(end - begin, m.cols);
  std::copy(m.row(begin), m.row(begin) + out.data.size(), out.data.begin());
  return out;
}

}  // namespace

std::size_t Searcher::query_block() const {
  // Routing weights and similarities are queries x keys (or heads, or
  // questions): blocks of queries keep each such matrix near 64 MiB, so a
  // large batch against 100k heads runs in bounded memory.
  const Impl& s = *impl_;
  const std::size_t widest = std::max({s.teacher.num_heads(), s.head_clusters.size(), std::size_t{1}});
  return std::max<std::size_t>(1, (std::size_t{1} << 24) / widest);
}

Matrix Searcher::project(const Matrix& queries, const SearchOptions& options) const {
  const Impl& s = *impl_;
  check_queries(queries);
  if (const std::size_t block = query_block(); queries.rows > block) {
    Matrix out(0, s.teacher.dim());
    out.data.reserve(queries.rows * s.teacher.dim());
    for (std::size_t begin = 0; begin < queries.rows; begin += block) {
      const Matrix part = project(row_block(queries, begin, std::min(queries.rows, begin + block)), options);
      out.data.insert(out.data.end(), part.data.begin(), part.data.end());
      out.rows += part.rows;
    }
    return out;
  }
  const float temperature = options.temperature.value_or(s.teacher.temperature());
  switch (options.method) {
    case Method::Direct: {
      Matrix projected = queries;
      normalize_rows(projected, "query");
      return projected;
    }
    case Method::MultiHead:
      check_blend_options(options);
      return s.blended_teacher(queries, temperature, options, nullptr);
    case Method::GlobalW:
      return s.global_w().project(queries);
    case Method::SparseTeacher:
      return s.sparse().project(s.teacher_queries(queries), temperature, options.route_k);
    case Method::Student: {
      if (s.student.empty()) {
        throw InputError("projection \"" + s.projection_name + "\" has no student; distil one with " +
                         "`ldaproj distill --db " + s.store->path().string() + "`");
      }
      // The student was trained on unit queries, as the teacher sees them.
      Matrix unit = queries;
      normalize_rows(unit, "query");
      return s.student.project(unit);
    }
    case Method::Ensemble: {
      if (s.ensemble.empty()) {
        throw InputError("projection \"" + s.projection_name + "\" has no ensemble; train one with " +
                         "`ldaproj ensemble --db " + s.store->path().string() + "`");
      }
      Matrix unit = queries;
      normalize_rows(unit, "query");
      return s.ensemble.project(unit, options.top_domains);
    }
    case Method::QuestionRouting:
      check_question_options(options);
      return s.project_over_questions(queries, options.question_temperature, options.question_neighbors);
  }
  throw Error("unknown method");
}

void Searcher::check_blend_options(const SearchOptions& options) {
  for (const float blend : {options.blend_questions, options.blend_direct}) {
    if (!(blend >= 0.0f && blend < 1.0f)) throw InputError("blend weights must be in [0, 1), got " + std::to_string(blend));
  }
  if (options.blend_questions > 0.0f) check_question_options(options);
}

void Searcher::check_question_options(const SearchOptions& options) {
  if (!(options.question_temperature > 0.0f) || !std::isfinite(options.question_temperature)) {
    throw InputError("question temperature must be a positive number");
  }
}

void Searcher::check_queries(const Matrix& queries) const {
  const Impl& s = *impl_;
  if (queries.data.size() != queries.rows * queries.cols) {
    throw InputError("query matrix is " + std::to_string(queries.rows) + "x" + std::to_string(queries.cols) +
                     " but holds " + std::to_string(queries.data.size()) + " values");
  }
  if (queries.cols != s.teacher.dim()) {
    throw InputError("query embeddings have dimension " + std::to_string(queries.cols) + ", the projection \"" +
                     s.projection_name + "\" (model " + s.model_name + ") has " + std::to_string(s.teacher.dim()) +
                     "; embed the queries with that model");
  }
  // Checked before the method runs, so every method (and a missing student or
  // ensemble) reports a bad query the same way.
  for (std::size_t q = 0; q < queries.rows; ++q) {
    double sq = 0.0;
    for (std::size_t j = 0; j < queries.cols; ++j) sq += static_cast<double>(queries(q, j)) * queries(q, j);
    if (!std::isfinite(sq)) throw InputError("query #" + std::to_string(q) + " contains NaN or Inf values");
    if (sq <= 0.0) {
      throw InputError("query #" + std::to_string(q) + " is a zero vector; it has no direction to compare by cosine");
    }
  }
}

std::vector<QueryResult> Searcher::search(const Matrix& queries, const SearchOptions& options) const {
  const Impl& s = *impl_;
  check_queries(queries);
  if (const std::size_t block = query_block(); queries.rows > block) {
    std::vector<QueryResult> results;
    results.reserve(queries.rows);
    for (std::size_t begin = 0; begin < queries.rows; begin += block) {
      auto part = search(row_block(queries, begin, std::min(queries.rows, begin + block)), options);
      std::move(part.begin(), part.end(), std::back_inserter(results));
    }
    return results;
  }
  const float temperature = options.temperature.value_or(s.teacher.temperature());
  Matrix projected;
  Matrix weights;
  Matrix similarity;  // queries x heads: cosine to each head (centroid, or its best question)
  std::vector<SparseRouting> sparse_routes;
  const bool want_confidence = options.include_confidence || options.reject_below.has_value();
  if (options.method == Method::MultiHead) {
    check_blend_options(options);
    projected = s.blended_teacher(queries, temperature, options, options.routing_top > 0 ? &weights : nullptr);
  } else if (options.method == Method::QuestionRouting) {
    check_question_options(options);
    projected = s.project_over_questions(queries, options.question_temperature, options.question_neighbors,
                                         &weights, &similarity);
  } else if (options.method == Method::SparseTeacher) {
    projected = s.sparse().project(s.teacher_queries(queries), temperature, options.route_k, &sparse_routes);
  } else {
    projected = project(queries, options);
  }
  std::vector<QueryResult> results = rank(projected, options.top_k);
  if (similarity.rows == 0 && ((options.method == Method::MultiHead && options.routing_top > 0) || want_confidence)) {
    similarity = s.per_head(s.teacher.route_scores(s.teacher_queries(queries)), false);
  }
  const bool show_routing = options.routing_top > 0 &&
                            (options.method == Method::MultiHead || options.method == Method::QuestionRouting);
  for (std::size_t q = 0; q < queries.rows; ++q) {
    if (options.include_projection) {
      results[q].projection.assign(projected.row(q), projected.row(q) + projected.cols);
    }
    if (!sparse_routes.empty()) {
      const SparseRouting& r = sparse_routes[q];
      results[q].uncovered_mass_bound = r.uncovered_mass_bound;
      // Keys of one head (sub-keys) share its entry: weights add, the best similarity counts.
      for (std::size_t i = 0; i < r.heads.size(); ++i) {
        const std::int64_t cid = s.head_clusters[s.head_of_key[r.heads[i]]];
        auto same = std::find_if(results[q].routing.begin(), results[q].routing.end(),
                                 [cid](const RoutingEntry& e) { return e.cluster_id == cid; });
        if (same != results[q].routing.end()) {
          same->weight += r.weights[i];
          same->similarity = std::max(same->similarity, r.similarity[i]);
        } else if (results[q].routing.size() < options.routing_top) {
          results[q].routing.push_back({cid, s.cluster_names.at(cid), r.weights[i], r.similarity[i]});
        }
      }
    }
    if (want_confidence) {
      const float* row = similarity.row(q);
      results[q].confidence = *std::max_element(row, row + similarity.cols);
      if (options.reject_below && results[q].confidence < *options.reject_below) {
        results[q].rejected = true;
        results[q].answers.clear();
      }
    }
    if (show_routing) {
      const float* w = weights.row(q);
      std::vector<std::size_t> order(weights.cols);
      std::iota(order.begin(), order.end(), 0);
      const std::size_t take = std::min(options.routing_top, order.size());
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(take), order.end(),
                        [w](std::size_t a, std::size_t b) { return w[a] > w[b]; });
      for (std::size_t i = 0; i < take; ++i) {
        const std::int64_t cid = s.head_clusters[order[i]];
        results[q].routing.push_back({cid, s.cluster_names.at(cid), w[order[i]], similarity(q, order[i])});
      }
    }
  }
  return results;
}

std::vector<QueryResult> Searcher::rank(const Matrix& projected, std::size_t requested_top_k) const {
  const Impl& s = *impl_;
  // More than there are answers cannot be returned, and a huge request must not overflow below.
  const std::size_t top_k = std::min(requested_top_k, s.answers.size());
  if (projected.cols != s.teacher.dim()) {
    throw InputError("projected queries have dimension " + std::to_string(projected.cols) +
                     ", the store's model has " + std::to_string(s.teacher.dim()));
  }
  // Ask for enough answers that top_k distinct clusters survive de-duplication.
  const auto hits = s.answer_index->search(projected, top_k * s.max_answers_per_cluster);
  std::vector<QueryResult> results(projected.rows);
  for (std::size_t q = 0; q < projected.rows; ++q) {
    std::unordered_set<std::int64_t> seen;
    for (const Hit& hit : hits[q]) {
      const Answer& a = s.answers[static_cast<std::size_t>(hit.label)];
      if (!seen.insert(a.cluster_id).second) continue;
      results[q].answers.push_back({a.cluster_id, s.cluster_names.at(a.cluster_id), a.id, a.text, hit.score});
      if (results[q].answers.size() == top_k) break;
    }
  }
  return results;
}

bool Searcher::has_student() const { return !impl_->student.empty(); }
bool Searcher::has_ensemble() const { return !impl_->ensemble.empty(); }
std::size_t Searcher::ensemble_parameters() const { return impl_->ensemble.parameter_count(); }
std::size_t Searcher::student_parameters() const { return impl_->student.parameter_count(); }

const std::string& Searcher::model_name() const { return impl_->model_name; }
const std::string& Searcher::projection_name() const { return impl_->projection_name; }
std::optional<Provenance> Searcher::student_provenance() const { return impl_->student_provenance; }
std::optional<Provenance> Searcher::ensemble_provenance() const { return impl_->ensemble_provenance; }
const std::string& Searcher::fingerprint_id() const { return impl_->fingerprint_id; }
float Searcher::temperature() const { return impl_->teacher.temperature(); }
std::size_t Searcher::num_heads() const { return impl_->head_clusters.size(); }
std::size_t Searcher::num_answers() const { return impl_->answers.size(); }
bool Searcher::answer_index_is_approximate() const { return !impl_->answer_corpus.empty(); }

double Searcher::answer_index_recall(const Matrix& projected_queries, std::size_t k) const {
  const Impl& s = *impl_;
  if (s.answer_corpus.empty()) return 1.0;
  FlatIndex exact(s.answer_corpus.cols);
  exact.add(s.answer_corpus, s.answer_labels);
  return recall_at_k(exact.search(projected_queries, k), s.answer_index->search(projected_queries, k), k);
}

}  // namespace ldaproj
