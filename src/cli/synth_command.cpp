// `ldaproj synth`: a new store of synthetic clusters with embeddings,
// calibrated to the demo data's similarity statistics (printed side by side).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/scale_commands.hpp"
#include "cli/validators.hpp"

namespace ldaproj::cli {

void SynthCommand::add_to(CLI::App& app) {
  command = app.add_subcommand(
      "synth", "Write a new store of synthetic clusters (embeddings, placeholder texts) to study scale");
  command->add_option("--clusters", spec.clusters, "Number of clusters (heads)")->required()->check(positive_number());
  command->add_option("--questions-per-cluster", spec.questions_per_cluster, "Question embeddings per cluster")
      ->capture_default_str()
      ->check(positive_number());
  command->add_option("--domains", spec.domains, "Domains the clusters fall into (default: about sqrt(clusters))");
  command->add_option("--dim", spec.dim, "Embedding dimension")->capture_default_str()->check(number_in(2, 4096));
  command->add_option("--seed", spec.seed, "Random seed (the same seed gives the same data)")->capture_default_str();
  command->add_option("--out", out, "New database file to create (must not exist)")->required();
  command->add_flag("--json", as_json, "Print the similarity statistics as JSON");
}

int SynthCommand::run() const {
  const SimilarityStats got = write_synthetic_store(spec, out);
  auto to_json = [](const SimilarityStats& s) {
    return nlohmann::json{{"intra_cluster", {{"mean", s.intra_mean}, {"std", s.intra_std}}},
                          {"between_centroids", {{"mean", s.inter_mean}, {"std", s.inter_std}}},
                          {"question_answer", {{"mean", s.answer_mean}, {"std", s.answer_std}}},
                          {"nearest_centroid", {{"mean", s.nearest_mean}}}};
  };
  if (as_json) {
    std::printf("%s\n", nlohmann::json{{"database", out},
                                       {"clusters", spec.clusters},
                                       {"questions", spec.clusters * spec.questions_per_cluster},
                                       {"model", "synthetic"},
                                       {"similarity", to_json(got)},
                                       {"demo_similarity", to_json(kDemoSimilarity)}}
                            .dump()
                            .c_str());
    return 0;
  }
  std::printf("%s: %zu synthetic clusters, %zu questions, %zu-d embeddings under model \"synthetic\"\n",
              out.c_str(), spec.clusters, spec.clusters * spec.questions_per_cluster, spec.dim);
  std::printf("  synthetic: %s\n", describe(got).c_str());
  std::printf("  demo data: %s\n", describe(kDemoSimilarity).c_str());
  std::printf("  (random pairs of centroids span domains here; the demo is one domain)\n");
  std::printf("next: ldaproj train --db %s\n", out.c_str());
  return 0;
}

}  // namespace ldaproj::cli
