// `ldaproj finetune-encoder`: fine-tune the sentence encoder's last layers on
// the store's questions and write the result as a new model directory.
#pragma once
#include <CLI/CLI.hpp>

#include <string>

#include "ldaproj/fine_tune.hpp"

namespace ldaproj::cli {

struct FineTuneEncoderCommand {
  std::string db;
  std::string base_model;  // empty: $LDAPROJ_MODEL or the bundled model
  std::string out;
  std::string validation;
  EncoderFineTuneOptions options;
  bool as_json = false, quiet = false;
  CLI::App* command = nullptr;

  void add_to(CLI::App& app);
  int run() const;
};

}  // namespace ldaproj::cli
