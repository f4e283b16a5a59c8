// Training the teacher from the store: one head per cluster.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ldaproj/store.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

struct TeacherTrainOptions {
  std::string name;  // empty: "multi_head_<model>"
  float temperature = kDefaultTemperature;
  CentroidMethod centroid_method = CentroidMethod::Mean;
  // > 0: after the centroids, learn discriminative keys for that many epochs
  // (learn_keys at `temperature`); 0 keeps the centroids.
  std::size_t key_epochs = 0;
  float key_lr = KeyLearningOptions{}.lr;
};

struct TeacherTrainReport {
  std::int64_t projection_id = 0;
  std::string name;
  std::size_t heads = 0;
  std::size_t questions = 0;
  std::vector<std::string> warnings;  // e.g. clusters skipped for lack of questions
  KeyLearningReport keys;             // epochs == 0 when keys were not learned
};

// Builds the heads for every cluster that has question and answer embeddings
// for `model_name`, stores them as a new active projection (one transaction)
// and returns what was done. InputError when embeddings are missing (run
// `ldaproj embed`) or no cluster qualifies; the store is unchanged then.
TeacherTrainReport train_teacher(Store& store, const std::string& model_name,
                                 const TeacherTrainOptions& options);

}  // namespace ldaproj
