// The hierarchical ensemble: meta-router weights, top-k mixing against a
// slow reference, the libtorch loss against the lean forward, training on a
// small clustered teacher, files and the store.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "ldaproj/ensemble.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/safetensors.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

Matrix random_unit_rows(std::size_t rows, std::size_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Matrix m(rows, cols);
  for (float& v : m.data) v = dist(rng);
  normalize_rows(m, "row");
  return m;
}

StudentConfig small_student(std::size_t dim) {
  StudentConfig c;
  c.dim = dim;
  c.num_heads = 4;
  c.keys_per_head = 2;
  c.layers = 1;
  c.variant = StudentVariant::Block;
  return c;
}

// Training options for the 24-d toy: small students (4 x 4 keys), a 32-wide
// router, one thread; the tests set epochs, samples and top-k.
EnsembleOptions toy_training_options(std::size_t student_epochs, std::size_t student_samples,
                                     std::size_t router_epochs, std::size_t top_domains) {
  EnsembleOptions o;
  o.student.config = small_student(24);
  o.student.config.keys_per_head = 4;
  o.student.epochs = student_epochs;
  o.student.lr = 3e-3;
  o.student.data.samples = student_samples;
  o.router_hidden = 32;
  o.router_epochs = router_epochs;
  o.router_lr = 3e-3;
  o.router_data.samples = 1024;
  o.top_domains = top_domains;
  o.threads = 1;
  return o;
}

// An ensemble with random router and students (no training), `heads` heads
// spread over the domains round-robin.
EnsembleWeights random_ensemble(std::size_t dim, std::size_t domains, std::size_t top, std::size_t heads,
                                unsigned seed) {
  EnsembleWeights w;
  w.config.dim = dim;
  w.config.domains = domains;
  w.config.top_domains = top;
  w.config.router_hidden = 16;
  w.config.student = small_student(dim);
  const MultiHeadProjection anchor(random_unit_rows(8, dim, seed), random_unit_rows(8, dim, seed + 1), 0.1f);
  for (std::size_t d = 0; d < domains; ++d) {
    w.students.push_back(init_student(w.config.student, anchor, StudentInit::Random, seed + 10 + d));
    w.domain_names.push_back("domain " + std::to_string(d));
  }
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.5f);
  auto tensor = [&](std::string name, std::vector<std::int64_t> shape) {
    std::size_t n = 1;
    for (auto s : shape) n *= static_cast<std::size_t>(s);
    StudentTensor t{std::move(name), std::move(shape), std::vector<float>(n)};
    for (float& v : t.values) v = dist(rng);
    return t;
  };
  const auto D = static_cast<std::int64_t>(domains), d = static_cast<std::int64_t>(dim);
  w.router = {tensor("router.0.weight", {16, d}), tensor("router.0.bias", {16}), tensor("router.2.weight", {D, 16}),
              tensor("router.2.bias", {D})};
  for (std::size_t h = 0; h < heads; ++h) w.domain_of_head.push_back(h % domains);
  return w;
}

double dot(const float* a, const float* b, std::size_t n) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

TEST(EnsembleRouter, WeightsAreDistributionsAndTopKKeepsTheHeaviest) {
  const EnsembleWeights w = random_ensemble(24, 5, 2, 10, 1);
  const EnsembleModel model(w);
  const Matrix q = random_unit_rows(40, 24, 7);
  const Matrix all = model.router_weights(q);
  Matrix used;
  (void)model.forward(q, 2, &used);
  for (std::size_t r = 0; r < q.rows; ++r) {
    double sum = 0, used_sum = 0;
    std::size_t nonzero = 0;
    float smallest_kept = 1, largest_dropped = 0;
    for (std::size_t d = 0; d < 5; ++d) {
      EXPECT_GE(all(r, d), 0.0f);
      sum += all(r, d);
      used_sum += used(r, d);
      if (used(r, d) > 0) {
        ++nonzero;
        smallest_kept = std::min(smallest_kept, all(r, d));
      } else {
        largest_dropped = std::max(largest_dropped, all(r, d));
      }
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
    EXPECT_NEAR(used_sum, 1.0, 1e-5);
    EXPECT_EQ(nonzero, 2u);
    EXPECT_GE(smallest_kept, largest_dropped);
  }
}

TEST(EnsembleForward, MatchesASlowReferenceForEveryTopK) {
  const EnsembleWeights w = random_ensemble(24, 4, 2, 8, 2);
  const EnsembleModel model(w);
  std::vector<StudentModel> students;
  for (const auto& s : w.students) students.emplace_back(s);
  const Matrix q = random_unit_rows(9, 24, 3);
  const Matrix all = model.router_weights(q);
  for (std::size_t k = 1; k <= 4; ++k) {
    const Matrix got = model.forward(q, k);
    for (std::size_t r = 0; r < q.rows; ++r) {
      // The k heaviest domains by a plain selection, weights renormalised.
      std::vector<std::size_t> order{0, 1, 2, 3};
      std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return all(r, a) > all(r, b); });
      double kept = 0;
      for (std::size_t i = 0; i < k; ++i) kept += all(r, order[i]);
      std::vector<double> want(24, 0.0);
      Matrix one(1, 24);
      std::copy(q.row(r), q.row(r) + 24, one.row(0));
      for (std::size_t i = 0; i < k; ++i) {
        const Matrix y = students[order[i]].forward(one);
        for (std::size_t j = 0; j < 24; ++j) want[j] += all(r, order[i]) / kept * y(0, j);
      }
      for (std::size_t j = 0; j < 24; ++j) EXPECT_NEAR(got(r, j), want[j], 1e-5) << "k " << k << " row " << r;
    }
  }
  // k beyond the number of domains is all of them.
  EXPECT_EQ(model.forward(q, 99).data, model.forward(q, 4).data);
  EXPECT_THROW(model.forward(random_unit_rows(2, 23, 1)), InputError);
}

TEST(EnsembleRouter, LibtorchLossEqualsTheLeanForward) {
  const EnsembleWeights w = random_ensemble(24, 3, 2, 6, 4);
  const EnsembleModel model(w);
  const Matrix q = random_unit_rows(12, 24, 5);
  std::vector<Matrix> outputs;
  for (std::size_t d = 0; d < 3; ++d) outputs.push_back(random_unit_rows(12, 24, 20 + d));
  const Matrix targets = random_unit_rows(12, 24, 30);
  Matrix pooled(12, 3);
  for (std::size_t r = 0; r < 12; ++r) pooled(r, r % 3) = 0.7f, pooled(r, (r + 1) % 3) = 0.3f;

  const Matrix weights = model.router_weights(q);
  double mse = 0, kl = 0;
  for (std::size_t r = 0; r < 12; ++r) {
    for (std::size_t j = 0; j < 24; ++j) {
      double mix = 0;
      for (std::size_t d = 0; d < 3; ++d) mix += weights(r, d) * outputs[d](r, j);
      mse += (mix - targets(r, j)) * (mix - targets(r, j));
    }
    for (std::size_t d = 0; d < 3; ++d) {
      if (pooled(r, d) > 0) kl += pooled(r, d) * (std::log(pooled(r, d)) - std::log(weights(r, d)));
    }
  }
  mse /= 12, kl /= 12;
  EXPECT_NEAR(ensemble_router_loss(w, q, outputs, targets, pooled, 0.0), mse, 1e-4);
  EXPECT_NEAR(ensemble_router_loss(w, q, outputs, targets, pooled, 0.5), mse + 0.5 * kl, 1e-4);
}

TEST(EnsembleWeightsTest, InconsistentWeightsAreRejected) {
  EnsembleWeights w = random_ensemble(24, 3, 2, 6, 6);
  EXPECT_NO_THROW(w.validate("w"));
  EnsembleWeights missing_student = w;
  missing_student.students.pop_back();
  EXPECT_THROW(missing_student.validate("w"), InputError);
  EnsembleWeights bad_head = w;
  bad_head.domain_of_head[0] = 3;
  EXPECT_THROW(bad_head.validate("w"), InputError);
  EnsembleWeights nan = w;
  nan.router[2].values[0] = std::nanf("");
  EXPECT_THROW(nan.validate("w"), InputError);
  EnsembleWeights shape = w;
  shape.router[0].shape = {15, 24};
  EXPECT_THROW(shape.validate("w"), InputError);
  EXPECT_THROW(EnsembleConfig::from_json("{\"dim\": 24}", "cfg"), InputError);
}

// Clustered heads in two well-separated groups, questions around each head.
struct ToyTeacher {
  MultiHeadProjection teacher;
  Matrix questions;
  std::vector<std::size_t> head_of_question;
};

ToyTeacher toy_teacher(std::size_t heads, std::size_t dim, std::size_t per_head, unsigned seed) {
  ToyTeacher t;
  const Matrix centres = random_unit_rows(heads, dim, seed);
  const Matrix answers = random_unit_rows(heads, dim, seed + 1);
  const Matrix noise = random_unit_rows(heads * per_head, dim, seed + 2);
  t.questions = Matrix(heads * per_head, dim);
  for (std::size_t i = 0; i < t.questions.rows; ++i) {
    const std::size_t h = i / per_head;
    for (std::size_t j = 0; j < dim; ++j) t.questions(i, j) = centres(h, j) + 0.6f * noise(i, j);
    t.head_of_question.push_back(h);
  }
  normalize_rows(t.questions, "question");
  t.teacher = MultiHeadProjection(centres, answers, 0.1f);
  return t;
}

TEST(EnsembleTraining, FineTuningTrainsRouterAndStudentsTogether) {
  const ToyTeacher toy = toy_teacher(24, 24, 6, 12);
  DomainOptions domain_options;
  domain_options.domains = 3;
  const DomainAssignment assignment = assign_domains(toy.teacher.centroids(), domain_options);
  // 2 student epochs: under-trained students leave the fine-tuning work to do.
  EnsembleOptions o = toy_training_options(2, 512, 10, 2);
  const EnsembleReport frozen = train_ensemble(toy.teacher, toy.questions, toy.head_of_question, assignment, o);
  // Two domains run per query: no router can cover more than the heaviest two
  // hold, and those hold at least two thirds of the mass when there are three.
  EXPECT_EQ(assignment.domains(), 3u);
  EXPECT_GE(frozen.routed_teacher_mass, 0.0);
  EXPECT_LE(frozen.routed_teacher_mass, frozen.best_teacher_mass + 1e-6);
  EXPECT_GE(frozen.best_teacher_mass, 2.0 / 3.0 - 1e-6);
  EXPECT_LE(frozen.best_teacher_mass, 1.0 + 1e-6);
  o.fine_tune_epochs = 10;
  o.fine_tune_lr = 3e-3;
  const EnsembleReport tuned = train_ensemble(toy.teacher, toy.questions, toy.head_of_question, assignment, o);
  EnsembleOptions no_lr = o;
  no_lr.fine_tune_lr = 0.0;
  EXPECT_THROW(train_ensemble(toy.teacher, toy.questions, toy.head_of_question, assignment, no_lr), InputError);
  EXPECT_EQ(frozen.fine_tune_epochs_run, 0u);
  EXPECT_GT(tuned.fine_tune_epochs_run, 0u);
  // The torch students' sparse mix is the lean forward's: before fine-tuning
  // both give the router's validation cosine.
  EXPECT_NEAR(tuned.fine_tune_initial_cosine, tuned.router_cosine, 1e-5);
  EXPECT_NEAR(tuned.router_cosine, frozen.validation_cosine, 1e-9);
  EXPECT_GT(tuned.validation_cosine, tuned.router_cosine + 0.01);
  // Students and router both moved.
  EXPECT_NE(tuned.weights.students[0].at("keys").values, frozen.weights.students[0].at("keys").values);
  EXPECT_NE(tuned.weights.router[0].values, frozen.weights.router[0].values);
  tuned.weights.validate("fine-tuned ensemble");

  // On fresh queries near the heads the fine-tuned ensemble agrees better with the teacher.
  const Matrix noise = random_unit_rows(96, 24, 98);
  Matrix q(96, 24);
  for (std::size_t i = 0; i < q.rows; ++i) {
    toy.teacher.centroid_row(i % 24, q.row(i));
    for (std::size_t j = 0; j < 24; ++j) q(i, j) += 0.6f * noise(i, j);
  }
  normalize_rows(q, "query");
  const Matrix teacher = toy.teacher.project(q);
  auto mean_cosine = [&](const EnsembleWeights& w) {
    const Matrix p = EnsembleModel(w).project(q);
    double mean = 0;
    for (std::size_t i = 0; i < q.rows; ++i) mean += dot(teacher.row(i), p.row(i), 24) / double(q.rows);
    return mean;
  };
  EXPECT_GT(mean_cosine(tuned.weights), mean_cosine(frozen.weights));
}

TEST(EnsembleTraining, LearnsToReproduceTheFullTeacher) {
  const ToyTeacher toy = toy_teacher(24, 24, 6, 11);
  DomainOptions domain_options;
  domain_options.domains = 3;
  const DomainAssignment assignment = assign_domains(toy.teacher.centroids(), domain_options);
  const EnsembleOptions o = toy_training_options(15, 1024, 30, 3);
  const EnsembleReport r = train_ensemble(toy.teacher, toy.questions, toy.head_of_question, assignment, o);
  ASSERT_EQ(r.domains.size(), 3u);
  std::size_t heads = 0;
  for (const auto& d : r.domains) heads += d.heads;
  EXPECT_EQ(heads, 24u);
  EXPECT_EQ(r.weights.domain_of_head, assignment.domain_of);
  EXPECT_GT(r.validation_cosine, r.router_initial_cosine);
  // Every domain runs (top 3 of 3): the chosen domains hold all of the teacher's mass.
  EXPECT_NEAR(r.routed_teacher_mass, 1.0, 1e-5);
  EXPECT_NEAR(r.best_teacher_mass, 1.0, 1e-5);

  // On fresh queries near the heads, the ensemble agrees with the teacher
  // better than the untrained router did on validation.
  const Matrix noise = random_unit_rows(48, 24, 99);
  Matrix q(48, 24);
  for (std::size_t i = 0; i < 48; ++i) {
    toy.teacher.centroid_row(i % 24, q.row(i));
    for (std::size_t j = 0; j < 24; ++j) q(i, j) += 0.6f * noise(i, j);
  }
  normalize_rows(q, "query");
  const Matrix teacher = toy.teacher.project(q);
  const Matrix ensemble = EnsembleModel(r.weights).project(q);
  double mean = 0;
  for (std::size_t i = 0; i < q.rows; ++i) mean += dot(teacher.row(i), ensemble.row(i), 24) / 48.0;
  EXPECT_GT(mean, r.router_initial_cosine);
  EXPECT_GT(mean, 0.8);

  // The same seed gives the same ensemble.
  const EnsembleReport again = train_ensemble(toy.teacher, toy.questions, toy.head_of_question, assignment, o);
  EXPECT_EQ(again.weights.router[2].values, r.weights.router[2].values);

  // A domain without heads is an error, not an empty student.
  DomainAssignment holes = assignment;
  holes.names.push_back("empty");
  EXPECT_THROW(train_ensemble(toy.teacher, toy.questions, toy.head_of_question, holes, o), InputError);
}

class EnsembleFiles : public testing_support::TempDirTest {};

TEST_F(EnsembleFiles, SafetensorsAndStoreRoundTrips) {
  const EnsembleWeights w = random_ensemble(24, 3, 2, 7, 8);
  const auto path = file("ensemble.safetensors");
  write_ensemble_safetensors(path, w, {{"projection", "p"}});
  EXPECT_TRUE(is_ensemble_safetensors(path));
  std::map<std::string, std::string> meta;
  const EnsembleWeights back = read_ensemble_safetensors(path, &meta);
  EXPECT_EQ(meta.at("projection"), "p");
  EXPECT_EQ(back.config.to_json(), w.config.to_json());
  EXPECT_EQ(back.domain_of_head, w.domain_of_head);
  EXPECT_EQ(back.domain_names, w.domain_names);
  const Matrix q = random_unit_rows(5, 24, 1);
  EXPECT_EQ(EnsembleModel(back).forward(q).data, EnsembleModel(w).forward(q).data);

  // A student file is not an ensemble.
  write_student_safetensors(file("student.safetensors"), w.students[0]);
  EXPECT_FALSE(is_ensemble_safetensors(file("student.safetensors")));
  EXPECT_THROW(read_ensemble_safetensors(file("student.safetensors")), InputError);

  // The store: needs the projection; replaces; goes away with it.
  Store store = Store::open(file("s.db"));
  const StoredEnsemble stored = to_stored_ensemble(w, "p", "{\"note\": 1}");
  EXPECT_THROW(store.save_ensemble(stored), InputError);
  EXPECT_FALSE(load_ensemble_weights(store, "p").has_value());
  StoredEnsemble broken = stored;
  broken.tensors[0].values[0] = std::nanf("");
  EXPECT_THROW(store.save_ensemble(broken), InputError);
  EXPECT_THROW(from_stored_ensemble(StoredEnsemble{0, "p", stored.config_json, {}, "{}", "", {}, false, {}}, "x"), InputError);
  const EnsembleWeights restored = from_stored_ensemble(stored, "x");
  EXPECT_EQ(EnsembleModel(restored).forward(q).data, EnsembleModel(w).forward(q).data);
}

// Found by fuzz_ensemble (regressions in fuzz/regressions/ensemble/): a config
// claiming sizes far beyond the tensors the file holds made the reader
// allocate what it claimed before comparing shapes (the 16384-wide student
// below claims 64 GiB of keys); a head assigned to domain inf or 1e30 was
// cast to size_t (undefined) before its range check. Both are now refused as
// bad input, before anything of the claimed size is allocated.
TEST_F(EnsembleFiles, LyingConfigsAndHeadsAreRefusedBeforeAnythingIsAllocated) {
  const EnsembleWeights w = random_ensemble(24, 3, 2, 7, 8);
  const StoredEnsemble stored = to_stored_ensemble(w, "p");
  const auto with_config = [&](const nlohmann::json& patch) {
    StoredEnsemble lying = stored;
    nlohmann::json config = nlohmann::json::parse(lying.config_json);
    config.merge_patch(patch);
    lying.config_json = config.dump();
    return lying;
  };
  const nlohmann::json huge_student = {{"dim", 16384}, {"num_heads", 1}, {"keys_per_head", 1000000}, {"ff_dim", 1000000}};
  for (const nlohmann::json& patch : {nlohmann::json{{"router_hidden", 1}, {"domains", 65536}},
                                      nlohmann::json{{"dim", 16384}, {"router_hidden", 1}, {"student", huge_student}}}) {
    SCOPED_TRACE(patch.dump());
    EXPECT_THROW(from_stored_ensemble(with_config(patch), "lying"), InputError);
  }
  for (const float head : {std::numeric_limits<float>::infinity(), 1e30f, 3.0f, 0.5f, -1.0f}) {
    StoredEnsemble lying = stored;
    lying.tensors.back().values[0] = head;
    EXPECT_THROW(from_stored_ensemble(lying, "lying head"), InputError) << head;
  }
  // Domain indices are written one way only.
  for (const char* name : {"students.01.keys", "students.+1.keys", "students. 1.keys", "students.1", "students..keys"}) {
    StoredEnsemble renamed = stored;
    for (StudentTensor& t : renamed.tensors)
      if (t.name == "students.1.keys") t.name = name;
    EXPECT_THROW(from_stored_ensemble(renamed, "renamed"), InputError) << name;
  }

  // The same for the student reader: a 65536-wide config over a 24-wide file.
  nlohmann::json student_config = nlohmann::json::parse(w.students[0].config.to_json());
  student_config.merge_patch(huge_student);
  std::vector<TensorToWrite> tensors;
  for (const StudentTensor& t : w.students[0].tensors) tensors.push_back({t.name, t.shape, t.values});
  write_safetensors(file("lying_student.safetensors"), tensors, {{"config", student_config.dump()}});
  EXPECT_THROW(read_student_safetensors(file("lying_student.safetensors")), InputError);
}

}  // namespace
}  // namespace ldaproj
