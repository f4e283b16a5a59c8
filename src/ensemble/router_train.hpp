// Training the ensemble's meta-router, and fine-tuning router and students
// together, with libtorch (router_train.cpp is the only ensemble file that
// includes torch headers).
#pragma once
#include <functional>
#include <vector>

#include "ldaproj/ensemble.hpp"

namespace ldaproj::ensemble_detail {

// Fixed inputs of router training: per domain, the students' outputs for
// every input; the full teacher's output; the teacher's routing mass per
// domain.
struct RouterData {
  Matrix inputs;                       // n x dim, unit rows
  std::vector<Matrix> student_outputs;  // domains x (n x dim)
  Matrix targets;                      // n x dim
  Matrix pooled_routing;               // n x domains
};

struct RouterResult {
  std::vector<StudentTensor> router;  // router_layout order
  std::size_t epochs_run = 0, best_epoch = 0;
  double initial_cosine = 0.0, best_cosine = 0.0;  // top-k mix vs teacher on validation
};

// `weights` supplies the config and the starting router tensors.
RouterResult train_router(const EnsembleWeights& weights, const RouterData& train, const RouterData& validation,
                          const EnsembleOptions& options, const std::function<void(const EnsembleProgress&)>& progress);

struct FineTuneResult {
  std::vector<StudentTensor> router;      // router_layout order
  std::vector<StudentWeights> students;   // one per domain
  std::size_t epochs_run = 0, best_epoch = 0;
  double initial_cosine = 0.0, best_cosine = 0.0;  // top-k mix vs teacher on validation
};

// End-to-end fine-tuning: the router and every student trained together on
// the sparse top-k mix (what inference computes) against the full teacher,
// plus the router's KL term. Starts from `weights`; keeps the best epoch by
// validation cosine (the starting point when no epoch beats it).
FineTuneResult fine_tune_ensemble(const EnsembleWeights& weights, const RouterData& train,
                                  const RouterData& validation, const EnsembleOptions& options,
                                  const std::function<void(const EnsembleProgress&)>& progress);

// PyTorch's default nn.Linear initialisation for the router, seeded.
std::vector<StudentTensor> initial_router(const EnsembleConfig& config, std::uint64_t seed);

}  // namespace ldaproj::ensemble_detail
