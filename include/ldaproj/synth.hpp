// Synthetic Q-A embeddings at any scale for studying distillation and speed:
// domains -> clusters -> questions, answers correlated with their cluster,
// with similarity statistics calibrated to real data.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ldaproj/matrix.hpp"
#include "ldaproj/store.hpp"

namespace ldaproj {

// Cosine statistics of a Q-A collection (means; centroids are the normalised
// mean of a cluster's questions).
struct SimilarityStats {
  double question_to_own_centroid = 0;
  double question_pair_same_cluster = 0;
  double question_pair_other_cluster = 0;
  double centroid_pair = 0;        // two different clusters
  double centroid_nearest = 0;     // each cluster's most similar other cluster
  double answer_to_own_centroid = 0;
  double answer_to_other_centroid = 0;
  double answer_pair = 0;          // answers of two different clusters
};

// What the bundled demo data measures (all-MiniLM-L6-v2; 33 clusters, ~9
// questions each): the default calibration target.
SimilarityStats demo_similarity_stats();

// Measures the statistics; pairs are sampled (seeded) beyond `max_pairs`.
// Rows need not be unit length. cluster_of_* index clusters 0..clusters-1.
SimilarityStats measure_similarity(const Matrix& questions, const std::vector<std::size_t>& cluster_of_question,
                                   const Matrix& answers, const std::vector<std::size_t>& cluster_of_answer,
                                   std::size_t clusters, std::uint64_t seed = 0, std::size_t max_pairs = 200000);

// Statistics of a store's embeddings for a model (one answer per cluster:
// the mean of its answers).
SimilarityStats measure_store_similarity(const Store& store, const std::string& model_name);

struct SynthOptions {
  std::size_t clusters = 1000;
  std::size_t questions_per_cluster = 9;
  std::size_t novel_per_cluster = 0;  // extra held-out queries, further from the centroid
  std::size_t clusters_per_domain = 4;
  std::size_t dim = 384;
  std::uint64_t seed = 0;
  SimilarityStats target = demo_similarity_stats();
  // Cosine of a held-out novel query to its cluster centroid (demo: 0.547).
  double novel_to_own_centroid = 0.547;
};

struct SynthData {
  Matrix questions;  // unit rows, clusters x questions_per_cluster, cluster-major
  std::vector<std::size_t> cluster_of_question;
  Matrix answers;    // unit rows, one per cluster
  Matrix novel;      // unit rows, clusters x novel_per_cluster, cluster-major
  std::vector<std::size_t> cluster_of_novel;
};

// Seeded. InputError on out-of-range options or targets the model cannot
// reach (e.g. a centroid similarity above the question spread allows).
SynthData generate_synthetic(const SynthOptions& options);

// Writes a new store at `out` (InputError if it exists): clusters
// "synth_<n>", questions and one answer each with placeholder texts, and their
// embeddings under the model name "synthetic-<dim>". Returns that name.
std::string write_synthetic_store(const std::filesystem::path& out, const SynthData& data, std::size_t dim);

}  // namespace ldaproj
