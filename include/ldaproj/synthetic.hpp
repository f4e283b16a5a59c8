// Synthetic question-answer clusters at any scale, shaped like real sentence
// embeddings (domains -> clusters -> questions, answers near their cluster,
// topics of related clusters within domains), for studying distillation
// and speed at n = 1k ... 1M without text or an encoder.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ldaproj/matrix.hpp"

namespace ldaproj {

// Every vector is normalise(cluster_center + spread * noise), noise ~
// N(0, I/d) so |noise| ~ 1; cluster centers are normalise(topic_center +
// cluster_spread * noise) and topic centers normalise(domain_center +
// topic_spread * noise); `variation` makes the spreads differ from cluster to
// cluster. The defaults were fitted to the bundled demo data embedded with
// all-MiniLM-L6-v2 (one domain, 31 clusters, 9 questions each), whose
// statistics are kDemoSimilarity below.
struct SimilarityProfile {
  float topic_spread = 1.175f;  // topics (groups of related clusters) around their domain's center
  std::size_t topics_per_domain = 8;
  float cluster_spread = 0.80f;    // clusters around their topic's center
  float question_spread = 1.175f;  // questions around their cluster center
  float answer_spread = 0.88f;     // the answer around its cluster center
  float novel_spread = 1.3f;       // held-out queries: phrased further from the cluster
  // Each cluster scales its spreads by exp(variation * N(0,1)): some clusters
  // are tight and close to neighbours, others loose, as in real FAQ data.
  float variation = 0.29f;
};

struct SyntheticSpec {
  std::size_t clusters = 1000;
  std::size_t questions_per_cluster = 8;
  std::size_t heldout_per_cluster = 0;  // novel queries per cluster
  std::size_t dim = 384;
  std::size_t domains = 0;  // 0: about sqrt(clusters)
  std::uint64_t seed = 1;
  SimilarityProfile profile;
};

// One cluster as generated; rows are unit vectors.
struct SyntheticCluster {
  std::size_t index = 0;
  std::size_t domain = 0;
  Matrix questions;  // questions_per_cluster x dim
  Matrix heldout;    // heldout_per_cluster x dim
  std::vector<float> answer;
};

// Calls `visit` for clusters 0 .. clusters-1 in order, generating each on the
// fly (memory stays O(domains * dim) however many clusters). Deterministic
// for a given spec.
void generate_synthetic(const SyntheticSpec& spec, const std::function<void(const SyntheticCluster&)>& visit);

// Cosine statistics that characterise a cluster set (means and standard
// deviations over sampled pairs).
struct SimilarityStats {
  double intra_mean = 0, intra_std = 0;      // two questions of the same cluster
  double inter_mean = 0, inter_std = 0;      // centroids of two different clusters
  double answer_mean = 0, answer_std = 0;    // a question and its own cluster's answer
  double nearest_mean = 0;                   // a centroid and its nearest other centroid
};

// questions: rows with cluster labels question_cluster[i] in [0, answers.rows);
// answers: one row per cluster. Samples up to `pairs` pairs of each kind.
SimilarityStats measure_similarity(const Matrix& questions, const std::vector<std::size_t>& question_cluster,
                                   const Matrix& answers, std::size_t pairs = 20000, std::uint64_t seed = 1);

std::string describe(const SimilarityStats& stats);  // one line, for printing

// The bundled demo data (data/demo/clusters.json, all-MiniLM-L6-v2).
inline constexpr SimilarityStats kDemoSimilarity{0.412, 0.161, 0.251, 0.141, 0.474, 0.135, 0.558};

// Writes a new store at `db` holding the synthetic clusters (placeholder
// texts, the cluster's domain in its description) and their embeddings
// under the model `model_name`, ready for `ldaproj train`. InputError when
// `db` already exists (nothing is overwritten). Returns the measured
// similarity statistics of what was written.
SimilarityStats write_synthetic_store(const SyntheticSpec& spec, const std::string& db,
                                      const std::string& model_name = "synthetic");

}  // namespace ldaproj
