// The hierarchical ensemble: the heads split into domains, one student per
// domain distilled from that domain's heads, and a meta-router MLP that
// weighs the students so that their mix reproduces the *full* teacher.
// Inference runs only the top-k domains' students. Training of the router
// uses libtorch (src/ensemble/router_train.cpp); nothing here exposes it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ldaproj/distill.hpp"
#include "ldaproj/domains.hpp"
#include "ldaproj/matrix.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/student.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

struct EnsembleConfig {
  std::size_t dim = 384;
  std::size_t domains = 8;
  std::size_t top_domains = 2;     // students run per query at inference
  std::size_t router_hidden = 256;  // the meta-router's hidden width
  StudentConfig student;           // every domain's student has this shape

  void validate() const;  // InputError naming the field
  std::string to_json() const;
  static EnsembleConfig from_json(std::string_view json, const std::string& where);
};

// Named tensors: "router.0.weight" (hidden x dim), "router.0.bias",
// "router.2.weight" (domains x hidden), "router.2.bias" (PyTorch's
// nn.Sequential(Linear, GELU, Linear) names), then each domain's student under
// "students.<d>.", then "domain_of_head" (one float per teacher head: the
// domain it was assigned to, kept for inspection and for the KL pooling).
struct EnsembleWeights {
  EnsembleConfig config;
  std::vector<StudentTensor> router;                 // the four router tensors, in order
  std::vector<StudentWeights> students;              // one per domain
  std::vector<std::size_t> domain_of_head;           // per teacher head
  std::vector<std::string> domain_names;             // per domain

  // InputError naming `where`: counts, shapes or values inconsistent with config.
  void validate(const std::string& where) const;
  std::size_t parameter_count() const;  // router + students
};

// The lean forward of the ensemble (BLAS, batch-first).
class EnsembleModel {
 public:
  EnsembleModel();
  explicit EnsembleModel(const EnsembleWeights& weights);  // validates them

  // The meta-router's softmax over all domains (queries x domains, rows sum to one).
  Matrix router_weights(const Matrix& unit_queries) const;
  // Sum over each query's top `top_domains` domains (0: the config's) of the
  // renormalised router weight times that domain's student output. When
  // `weights_out` is given it receives the weights actually used (queries x
  // domains, zero outside the top-k, rows sum to one).
  Matrix forward(const Matrix& unit_queries, std::size_t top_domains = 0, Matrix* weights_out = nullptr) const;
  // forward() with unit rows: the ensemble's projected query.
  Matrix project(const Matrix& unit_queries, std::size_t top_domains = 0) const;

  const EnsembleConfig& config() const;
  std::size_t parameter_count() const;
  bool empty() const;
  // Per query, students that actually run: min(top_domains, domains).
  std::size_t domains_per_query(std::size_t top_domains = 0) const;

  EnsembleModel(const EnsembleModel&);
  EnsembleModel& operator=(const EnsembleModel&);
  EnsembleModel(EnsembleModel&&) noexcept;
  EnsembleModel& operator=(EnsembleModel&&) noexcept;
  ~EnsembleModel();

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

// ---------------------------------------------------------------- training
struct EnsembleOptions {
  std::size_t top_domains = 2;
  std::size_t router_hidden = 256;
  DistillOptions student;  // shape and training of every domain's student
  // The router: AdamW on MSE(mix of students, teacher output) plus
  // kl_weight x KL(teacher routing mass per domain || router weights).
  std::size_t router_epochs = 40;
  std::size_t router_batch_size = 256;
  std::size_t router_patience = 6;
  double router_lr = 1e-3;
  double router_kl_weight = 0.1;
  // End-to-end fine-tuning after the router (0 epochs: off): router and every
  // student trained together on the sparse top-k mix against the full
  // teacher, with the router's KL term; same inputs, batch size and patience
  // as the router.
  std::size_t fine_tune_epochs = 0;
  double fine_tune_lr = 1e-4;
  // Inputs the router trains on (the students' distillation data is made
  // per domain from `student.data`).
  DistillDataOptions router_data;
  std::uint64_t seed = 0;
  int threads = 0;  // 0: all cores
};

struct EnsembleProgress {
  std::string stage;  // "student", "router" or "fine-tune"
  std::size_t domain = 0, domains = 0;  // for "student": which one (0-based)
  std::size_t epoch = 0, epochs = 0;
  double loss = 0.0;
};

struct EnsembleDomainReport {
  std::size_t heads = 0;
  std::size_t questions = 0;
  double validation_cosine = 0.0;  // the student vs its domain's teacher
  double seconds = 0.0;
};

struct EnsembleReport {
  EnsembleWeights weights;
  std::vector<EnsembleDomainReport> domains;
  std::size_t router_epochs_run = 0, router_best_epoch = 0;
  double router_initial_cosine = 0.0;  // top-k mix vs full teacher on validation inputs, before router training
  double router_cosine = 0.0;           // the same after router training (best epoch)
  std::size_t fine_tune_epochs_run = 0, fine_tune_best_epoch = 0;
  double fine_tune_initial_cosine = 0.0;  // router_cosine recomputed through the torch students
  double validation_cosine = 0.0;  // the final ensemble's (after fine-tuning when it ran)
  // On the validation inputs: the share of the full teacher's routing mass
  // that falls on the domains the final router runs, and the most any
  // top_domains domains could hold. A gap means the router picks the wrong
  // domains; a small gap with a low cosine means the students are the limit.
  double routed_teacher_mass = 0.0;
  double best_teacher_mass = 0.0;
  double seconds = 0.0;
};

// Trains the ensemble for `teacher` over the given domain assignment
// (assignment.domain_of[h] for every head h). `questions` are unit rows,
// head_of_question[i] the head of question i. Deterministic for a seed.
EnsembleReport train_ensemble(const MultiHeadProjection& teacher, const Matrix& questions,
                              const std::vector<std::size_t>& head_of_question, const DomainAssignment& assignment,
                              const EnsembleOptions& options,
                              const std::function<void(const EnsembleProgress&)>& progress = {});

// The router-training loss, MSE(dense mix of the students, targets) +
// kl_weight x KL(pooled_routing || router weights), computed by the libtorch
// module (for checking it against the lean forward): `student_outputs` holds
// one (inputs x dim) matrix per domain.
double ensemble_router_loss(const EnsembleWeights& weights, const Matrix& inputs,
                            const std::vector<Matrix>& student_outputs, const Matrix& targets,
                            const Matrix& pooled_routing, double kl_weight);

// ---------------------------------------------------------------- files and the store
// Safetensors with every tensor above and the config, domain names and
// `metadata` in __metadata__ ("format": "ldaproj-ensemble").
void write_ensemble_safetensors(const std::filesystem::path& path, const EnsembleWeights& weights,
                                const std::map<std::string, std::string>& metadata = {});
EnsembleWeights read_ensemble_safetensors(const std::filesystem::path& path,
                                          std::map<std::string, std::string>* metadata = nullptr);
// True when the file's metadata says it is an ensemble (false for a student).
bool is_ensemble_safetensors(const std::filesystem::path& path);

// The ensemble as the store keeps it: the config JSON (with the domain names)
// and the flat tensor list ("router.*", "students.<d>.*", "domain_of_head").
StoredEnsemble to_stored_ensemble(const EnsembleWeights& weights, const std::string& projection,
                                  const std::string& metrics_json = "{}");
// InputError naming `where` when the tensors do not make a valid ensemble.
EnsembleWeights from_stored_ensemble(const StoredEnsemble& stored, const std::string& where);
// The stored ensemble of a projection (the active one when empty); nullopt when none.
std::optional<EnsembleWeights> load_ensemble_weights(const Store& store, const std::string& projection_name = {});

// Loads the named (or active) projection, assigns domains (`domains`
// options, or `labels_file` for manual labels), trains and saves the
// ensemble tied to that projection in one transaction (replacing an earlier
// one).
struct StoreEnsembleReport {
  std::string projection;
  EnsembleReport report;
};
StoreEnsembleReport train_projection_ensemble(Store& store, const std::string& projection_name,
                                              const DomainOptions& domains, const std::string& labels_file,
                                              const EnsembleOptions& options,
                                              const std::function<void(const EnsembleProgress&)>& progress = {});

}  // namespace ldaproj
