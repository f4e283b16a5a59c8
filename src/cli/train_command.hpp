// `ldaproj train`: the multi-head projection from the store's embeddings, with
// the temperature and key learning chosen on held-out questions unless given.
#pragma once
#include <CLI/CLI.hpp>

#include <optional>
#include <string>

#include "ldaproj/train.hpp"

namespace ldaproj::cli {

struct TrainCommand {
  std::string db, name, centroid = "mean", embedding_model, validation, model_dir;
  std::optional<float> temperature;
  std::optional<std::size_t> key_epochs;
  TeacherTrainOptions options;
  bool no_tune = false, as_json = false, quiet = false, replace = false;
  CLI::App* command = nullptr;

  void add_to(CLI::App& app);
  int run();
};

}  // namespace ldaproj::cli
