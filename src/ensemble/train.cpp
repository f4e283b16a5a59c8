// Training the ensemble: one student per domain, each distilled from the
// teacher restricted to its domain's heads, then the meta-router fitted on
// frozen student outputs against the full teacher; and doing it for a stored
// projection, saved in one transaction.
#include <algorithm>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <unordered_map>

#include "ensemble/router_train.hpp"
#include "ldaproj/ensemble.hpp"
#include "ldaproj/error.hpp"

namespace ldaproj {

namespace {

using ensemble_detail::RouterData;

// Rows of the teacher's routing are computed in slices, so a large teacher
// never builds an (inputs x heads) matrix.
constexpr std::size_t kRoutingSlice = 512;

Matrix rows_of(const Matrix& m, const std::vector<std::size_t>& rows) {
  Matrix out(rows.size(), m.cols);
  for (std::size_t i = 0; i < rows.size(); ++i) std::copy(m.row(rows[i]), m.row(rows[i]) + m.cols, out.row(i));
  return out;
}

// At most `limit` rows of `m`, chosen at random (all of them, in order, when fewer).
Matrix sample_rows(const Matrix& m, std::size_t limit, std::mt19937_64& rng) {
  if (m.rows <= limit) return m;
  std::vector<std::size_t> rows(m.rows);
  std::iota(rows.begin(), rows.end(), 0);
  std::shuffle(rows.begin(), rows.end(), rng);
  rows.resize(limit);
  std::sort(rows.begin(), rows.end());
  return rows_of(m, rows);
}

RouterData router_data(const Matrix& inputs, const MultiHeadProjection& teacher, const std::vector<StudentModel>& students,
                       const std::vector<std::size_t>& domain_of_head, std::size_t domains) {
  RouterData data;
  data.inputs = inputs;
  data.targets = teacher.project(inputs);
  data.pooled_routing = Matrix(inputs.rows, domains);
  for (std::size_t begin = 0; begin < inputs.rows; begin += kRoutingSlice) {
    const std::size_t end = std::min(inputs.rows, begin + kRoutingSlice);
    std::vector<std::size_t> rows(end - begin);
    std::iota(rows.begin(), rows.end(), begin);
    const Matrix pooled = pool_routing(teacher.routing_weights(rows_of(inputs, rows), teacher.temperature()),
                                       domain_of_head, domains);
    std::copy(pooled.data.begin(), pooled.data.end(), data.pooled_routing.row(begin));
  }
  for (const StudentModel& s : students) data.student_outputs.push_back(s.forward(inputs));
  return data;
}

struct TeacherMassCover {
  double routed = 0.0, best = 0.0;
};

// Mean over the inputs of the teacher's routing mass on the domains the
// router runs, and on the heaviest top_domains domains.
TeacherMassCover teacher_mass_cover(const EnsembleModel& model, const RouterData& data) {
  TeacherMassCover cover;
  if (data.inputs.rows == 0) return cover;
  Matrix used;
  model.forward(data.inputs, 0, &used);
  const std::size_t domains = data.pooled_routing.cols, k = model.domains_per_query();
  std::vector<float> mass(domains);
  for (std::size_t r = 0; r < data.inputs.rows; ++r) {
    const float* pooled = data.pooled_routing.row(r);
    for (std::size_t d = 0; d < domains; ++d)
      if (used(r, d) > 0.0f) cover.routed += pooled[d];
    mass.assign(pooled, pooled + domains);
    std::partial_sort(mass.begin(), mass.begin() + static_cast<std::ptrdiff_t>(k), mass.end(), std::greater<>());
    cover.best += std::accumulate(mass.begin(), mass.begin() + static_cast<std::ptrdiff_t>(k), 0.0);
  }
  cover.routed /= static_cast<double>(data.inputs.rows);
  cover.best /= static_cast<double>(data.inputs.rows);
  return cover;
}

void check_options(const EnsembleOptions& o, const DomainAssignment& assignment, std::size_t heads) {
  if (assignment.domain_of.size() != heads) {
    throw InputError("the domain assignment covers " + std::to_string(assignment.domain_of.size()) + " heads, the teacher has " +
                     std::to_string(heads));
  }
  if (assignment.domains() == 0) throw InputError("the domain assignment has no domains");
  if (o.top_domains == 0) throw InputError("--top-domains must be at least 1");
  if (o.router_hidden == 0) throw InputError("--router-hidden must be at least 1");
  if (o.router_epochs == 0) throw InputError("--router-epochs must be at least 1");
  if (!(o.router_lr > 0.0)) throw InputError("--router-lr must be positive");
  if (!(o.router_kl_weight >= 0.0)) throw InputError("--router-kl-weight must be zero or positive");
  if (o.fine_tune_epochs > 0 && !(o.fine_tune_lr > 0.0)) throw InputError("--fine-tune-lr must be positive");
}

}  // namespace

EnsembleReport train_ensemble(const MultiHeadProjection& teacher, const Matrix& questions,
                              const std::vector<std::size_t>& head_of_question, const DomainAssignment& assignment,
                              const EnsembleOptions& options,
                              const std::function<void(const EnsembleProgress&)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  const std::size_t heads = teacher.num_heads(), dim = teacher.dim(), domains = assignment.domains();
  check_options(options, assignment, heads);
  if (head_of_question.size() != questions.rows) {
    throw InputError("train_ensemble: " + std::to_string(head_of_question.size()) + " head labels for " +
                     std::to_string(questions.rows) + " questions");
  }
  EnsembleReport report;
  EnsembleWeights& w = report.weights;
  w.config.dim = dim;
  w.config.domains = domains;
  w.config.top_domains = options.top_domains;
  w.config.router_hidden = options.router_hidden;
  w.config.student = options.student.config;
  w.config.student.dim = dim;
  w.config.validate();
  w.domain_of_head = assignment.domain_of;
  w.domain_names = assignment.names;

  // Heads and questions of every domain, in local numbering.
  std::vector<std::vector<std::size_t>> heads_of_domain(domains);
  std::vector<std::size_t> local_index(heads);
  for (std::size_t h = 0; h < heads; ++h) {
    const std::size_t d = assignment.domain_of[h];
    if (d >= domains) throw InputError("head " + std::to_string(h) + " is assigned to a domain out of range");
    local_index[h] = heads_of_domain[d].size();
    heads_of_domain[d].push_back(h);
  }
  std::vector<std::vector<std::size_t>> questions_of_domain(domains);
  for (std::size_t i = 0; i < questions.rows; ++i) {
    if (head_of_question[i] >= heads) throw InputError("question " + std::to_string(i) + " names a head out of range");
    questions_of_domain[assignment.domain_of[head_of_question[i]]].push_back(i);
  }

  std::vector<StudentModel> students;
  for (std::size_t d = 0; d < domains; ++d) {
    if (heads_of_domain[d].empty()) {
      throw InputError("domain \"" + assignment.names[d] + "\" has no heads; use fewer domains");
    }
    const auto domain_start = std::chrono::steady_clock::now();
    Matrix centroids(heads_of_domain[d].size(), dim), answers(heads_of_domain[d].size(), dim);
    for (std::size_t i = 0; i < heads_of_domain[d].size(); ++i) {
      const std::size_t h = heads_of_domain[d][i];
      teacher.centroid_row(h, centroids.row(i));
      teacher.answer_row(h, answers.row(i));
    }
    const MultiHeadProjection domain_teacher(std::move(centroids), std::move(answers), teacher.temperature());
    const Matrix domain_questions = rows_of(questions, questions_of_domain[d]);
    std::vector<std::size_t> domain_heads;
    for (std::size_t i : questions_of_domain[d]) domain_heads.push_back(local_index[head_of_question[i]]);
    if (domain_questions.rows == 0) {
      throw InputError("domain \"" + assignment.names[d] + "\" has no questions to distil from");
    }
    DistillOptions o = options.student;
    o.config = w.config.student;
    o.seed = options.seed + 1000003 * (d + 1);
    o.data.seed = o.seed;
    o.threads = options.threads;
    DistillObserver observer;
    if (progress) {
      observer.on_epoch = [&, d](const DistillEpoch& e) {
        progress({"student", d, domains, e.epoch, o.epochs, e.train_loss});
      };
    }
    const DistillReport r = distill_student(domain_teacher, domain_questions, domain_heads, o, observer);
    EnsembleDomainReport dr;
    dr.heads = heads_of_domain[d].size();
    dr.questions = domain_questions.rows;
    dr.validation_cosine = r.initial_validation_cosine;
    for (const auto& e : r.history)
      if (e.epoch == r.best_epoch) dr.validation_cosine = e.validation_cosine;
    dr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - domain_start).count();
    report.domains.push_back(dr);
    w.students.push_back(r.weights);
    students.emplace_back(r.weights);
  }

  // Router inputs: distillation data over the whole teacher, capped so that
  // the students' outputs (inputs x domains x dim floats) stay small.
  DistillDataOptions data_options = options.router_data;
  data_options.seed = options.seed + 7;
  const DistillData data = make_distill_data(teacher, questions, head_of_question, data_options);
  std::mt19937_64 rng(options.seed + 11);
  const std::size_t train_cap = std::max<std::size_t>(1024, options.router_data.samples);
  const Matrix train_inputs = sample_rows(data.train_inputs, train_cap, rng);
  const Matrix validation_inputs = sample_rows(data.validation_inputs.rows ? data.validation_inputs : data.train_inputs,
                                               std::max<std::size_t>(256, train_cap / 4), rng);
  const RouterData train = router_data(train_inputs, teacher, students, w.domain_of_head, domains);
  const RouterData validation = router_data(validation_inputs, teacher, students, w.domain_of_head, domains);

  w.router = ensemble_detail::initial_router(w.config, options.seed + 3);
  const ensemble_detail::RouterResult r = ensemble_detail::train_router(w, train, validation, options, progress);
  w.router = r.router;
  report.router_epochs_run = r.epochs_run;
  report.router_best_epoch = r.best_epoch;
  report.router_initial_cosine = r.initial_cosine;
  report.router_cosine = r.best_cosine;
  report.validation_cosine = r.best_cosine;
  if (options.fine_tune_epochs > 0) {
    const ensemble_detail::FineTuneResult f = ensemble_detail::fine_tune_ensemble(w, train, validation, options, progress);
    w.router = f.router;
    w.students = f.students;
    report.fine_tune_epochs_run = f.epochs_run;
    report.fine_tune_best_epoch = f.best_epoch;
    report.fine_tune_initial_cosine = f.initial_cosine;
    report.validation_cosine = f.best_cosine;
  }
  w.validate("the trained ensemble");
  const TeacherMassCover cover = teacher_mass_cover(EnsembleModel(w), validation);
  report.routed_teacher_mass = cover.routed;
  report.best_teacher_mass = cover.best;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

StoreEnsembleReport train_projection_ensemble(Store& store, const std::string& projection_name,
                                              const DomainOptions& domain_options, const std::string& labels_file,
                                              const EnsembleOptions& options,
                                              const std::function<void(const EnsembleProgress&)>& progress) {
  const ProjectionTeacher loaded = load_projection_teacher(store, projection_name);
  const Projection& projection = loaded.projection;
  const MultiHeadProjection& teacher = loaded.teacher;

  DomainAssignment assignment;
  if (!labels_file.empty()) {
    std::unordered_map<std::int64_t, std::string> external;
    for (const Cluster& c : store.clusters()) external.emplace(c.id, c.external_id);
    std::vector<std::string> names;
    for (const Head& head : projection.heads) names.push_back(external.at(head.cluster_id));
    assignment = read_domain_labels(labels_file, names);
  } else {
    assignment = assign_domains(teacher.centroids(), domain_options);
  }

  StoreEnsembleReport out;
  out.projection = projection.name;
  out.report = train_ensemble(teacher, loaded.questions, loaded.head_of_question, assignment, options, progress);
  const EnsembleReport& r = out.report;
  nlohmann::json domains = nlohmann::json::array();
  for (std::size_t d = 0; d < r.domains.size(); ++d) {
    domains.push_back({{"name", assignment.names[d]},
                       {"heads", r.domains[d].heads},
                       {"questions", r.domains[d].questions},
                       {"student_validation_cosine", r.domains[d].validation_cosine},
                       {"seconds", r.domains[d].seconds}});
  }
  const nlohmann::json metrics{{"teacher_temperature", projection.temperature},
                               {"teacher_heads", teacher.num_heads()},
                               {"parameters", r.weights.parameter_count()},
                               {"domain_method", labels_file.empty() ? std::string(to_string(domain_options.method))
                                                                     : std::string("manual")},
                               {"domains", domains},
                               {"router_epochs_run", r.router_epochs_run},
                               {"router_best_epoch", r.router_best_epoch},
                               {"router_initial_cosine", r.router_initial_cosine},
                               {"router_cosine", r.router_cosine},
                               {"fine_tune_epochs_run", r.fine_tune_epochs_run},
                               {"fine_tune_best_epoch", r.fine_tune_best_epoch},
                               {"validation_cosine", r.validation_cosine},
                               {"routed_teacher_mass", r.routed_teacher_mass},
                               {"best_teacher_mass", r.best_teacher_mass},
                               {"seconds", r.seconds}};
  StoredEnsemble stored = to_stored_ensemble(r.weights, projection.name, metrics.dump());
  stored.teacher_fingerprint = projection.fingerprint;  // as for distill_projection
  store.save_ensemble(stored);
  return out;
}

}  // namespace ldaproj
