// CLI commands for scale: `synth` writes a synthetic store, `bench` runs the
// crossover study, `domains` splits a projection's heads into domains,
// `ensemble` trains the hierarchical ensemble over those domains.
#pragma once
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "ldaproj/domains.hpp"
#include "ldaproj/ensemble.hpp"
#include "ldaproj/synthetic.hpp"

namespace ldaproj::cli {

struct SynthCommand {
  SyntheticSpec spec;
  std::string out;
  bool as_json = false;
  CLI::App* command = nullptr;

  void add_to(CLI::App& app);
  int run() const;
};

struct BenchCommand {
  std::string clusters = "1000,10000,100000";
  std::string methods;  // empty: every method
  std::size_t route_k = 64;
  float temperature = 0.1f;
  std::size_t queries = 256;
  std::size_t questions_per_cluster = 4;
  std::size_t training_questions = 20000;
  std::size_t student_epochs = 20;
  std::size_t student_samples = 8192;
  std::string student_sources;  // empty: the library's default sources
  bool student_keys_only = false;
  float student_attention_gain = 0.0f;
  std::size_t domains = 8;
  std::size_t top_domains = 2;
  std::size_t student_keys_per_head = 8;
  std::size_t fine_tune_epochs = 0;
  int threads = 0;
  std::string csv = "crossover.csv";
  std::string plot = "crossover.svg";
  bool as_json = false;
  std::uint64_t seed = 1;
  CLI::App* command = nullptr;

  void add_to(CLI::App& app);
  int run() const;
};

struct DomainsCommand {
  std::string db;
  std::string projection;
  DomainOptions options;
  std::string method = "kmeans";
  std::string labels;
  std::string out;
  bool as_json = false;
  CLI::App* command = nullptr;

  void add_to(CLI::App& app);
  int run();
};

struct EnsembleCommand {
  std::string db;
  std::string projection;
  DomainOptions domains;
  std::string domain_method = "kmeans";
  std::string labels;
  EnsembleOptions options;
  std::string variant = "block";
  bool as_json = false, quiet = false;
  CLI::App* command = nullptr;

  void add_to(CLI::App& app);
  int run();
};

}  // namespace ldaproj::cli
