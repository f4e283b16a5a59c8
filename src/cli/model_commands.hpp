// CLI commands that manage a store's trained models as a whole:
// `projections list|activate|delete` and `backup`.
#pragma once
#include <CLI/CLI.hpp>

#include <string>

namespace ldaproj::cli {

struct ProjectionsCommand {
  std::string db, name, activate;
  bool as_json = false, force = false;
  CLI::App* command = nullptr;
  CLI::App* list = nullptr;
  CLI::App* activate_cmd = nullptr;
  CLI::App* remove = nullptr;

  void add_to(CLI::App& app);
  int run() const;
};

struct BackupCommand {
  std::string db, out;
  CLI::App* command = nullptr;

  void add_to(CLI::App& app);
  int run() const;
};

}  // namespace ldaproj::cli
