// Training the teacher from the store: one head per cluster.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <functional>
#include <optional>

#include "ldaproj/store.hpp"
#include "ldaproj/teacher.hpp"
#include "ldaproj/tuning.hpp"

namespace ldaproj {

// Held-out queries for the tuning (e.g. `train --val FILE`): embeddings and
// the external id of each query's cluster ("" or an unknown id: not used).
struct ValidationSet {
  Matrix queries;
  std::vector<std::string> clusters;
};

struct TeacherTrainOptions {
  std::string name;  // empty: "multi_head_<model>"
  // When a projection of that name exists: replaced (the library's default),
  // refused before any work, or kept with the new one saved as "<name>-2",
  // "-3", ... (`ldaproj train` without --name).
  ExistingProjection existing = ExistingProjection::Replace;
  // Unset: chosen by the tuning when `tune` is on (ldaproj/tuning.hpp),
  // otherwise kDefaultTemperature and centroid keys (no key learning).
  std::optional<float> temperature;
  CentroidMethod centroid_method = CentroidMethod::Mean;
  // > 0: after the centroids, learn discriminative keys for that many epochs
  // (learn_keys at the temperature); 0 keeps the centroids.
  std::optional<std::size_t> key_epochs;
  // Choose the unset settings on held-out questions, then refit on all of
  // them. Off here, on in `ldaproj train` (unless --no-tune).
  bool tune = false;
  SliceOptions slice;                         // how the held-out slice is drawn
  const ValidationSet* validation = nullptr;  // held-out queries to use instead of a slice
  std::size_t key_candidates = KeyLearningOptions{}.candidates;  // competitors per question at scale
  int threads = 0;                            // 0: every core
  // Progress lines (loading, each tuning result, each key-learning epoch).
  std::function<void(const std::string&)> on_progress = {};
  float key_lr = KeyLearningOptions{}.lr;
  // > 1: that many keys per head, started by k-means over the head's
  // questions (kmeans_sub_keys) and learned with key_epochs; a head's routing
  // score is the log-sum-exp of its keys'. Stored as Projection::tensors.
  std::size_t keys_per_head = 1;
  // Learn a query adapter W with the keys (needs key_epochs > 0): the teacher
  // routes normalise(q + W q). Stored as the tensor "query_adapter".
  bool query_adapter = false;
  float adapter_lr = KeyLearningOptions{}.adapter_lr;
  float adapter_decay = KeyLearningOptions{}.adapter_decay;
};

struct TeacherTrainReport {
  std::int64_t projection_id = 0;
  std::string name;       // as saved
  SavedProjection saved;  // what saving replaced or kept
  std::size_t heads = 0;
  std::size_t questions = 0;
  std::vector<std::string> warnings;  // e.g. clusters skipped for lack of questions
  KeyLearningReport keys;             // epochs == 0 when keys were not learned
  float temperature = 0;              // the one the projection routes with
  TuningReport tuning;                // what the tuning tried and chose (tuned == false: not run)
  double seconds = 0;
};

// The tuning as stored in a projection's metrics under "tuning" (a JSON
// object: the chosen setting, every trial, where the held-out data came from).
std::string tuning_metrics_json(const TuningReport& tuning);

// What a stored projection routes with: one key per head (the centroids) or
// its sub-keys, each key's head and answer, and its query adapter (0 x 0
// when it has none). Error on tensors that do not fit the heads.
struct ProjectionRouting {
  Matrix keys;                           // keys x dim
  std::vector<std::size_t> head_of_key;  // position in Projection::heads
  Matrix answers;                        // keys x dim: the answer of each key's head
  Matrix adapter;                        // dim x dim, or 0 x 0
  bool has_sub_keys = false;
};
ProjectionRouting projection_routing(const Projection& projection, std::size_t dim);

// Builds the heads for every cluster that has question and answer embeddings
// for `model_name`, stores them as a new active projection (one transaction)
// and returns what was done. InputError when embeddings are missing (run
// `ldaproj embed`) or no cluster qualifies; the store is unchanged then.
TeacherTrainReport train_teacher(Store& store, const std::string& model_name,
                                 const TeacherTrainOptions& options);

}  // namespace ldaproj
