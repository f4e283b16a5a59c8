// Splitting heads into domains for the hierarchical ensemble: k-means over
// the centroids (default), agglomerative clustering cut at D domains, or
// manual labels from a file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "ldaproj/matrix.hpp"

namespace ldaproj {

enum class DomainMethod { KMeans, Agglomerative, Manual };
std::string_view to_string(DomainMethod method);  // "kmeans", "agglomerative", "manual"
DomainMethod parse_domain_method(std::string_view name);  // InputError on unknown

struct DomainOptions {
  std::size_t domains = 8;
  DomainMethod method = DomainMethod::KMeans;
  // Every domain gets floor(n/D) or ceil(n/D) heads (k-means only), so no
  // student is starved or overloaded.
  bool balanced = false;
  std::uint64_t seed = 1;
  std::size_t iterations = 30;  // k-means rounds
};

struct DomainAssignment {
  std::vector<std::size_t> domain_of;  // per head, in [0, domains)
  std::vector<std::string> names;      // per domain (manual labels; "d0", "d1", ... otherwise)
  std::size_t domains() const { return names.size(); }
  std::vector<std::size_t> sizes() const;
};

// Clusters the rows of `centroids` (unit or not: cosine is used) into
// options.domains non-empty domains (fewer only if there are fewer heads).
// InputError for D = 0 or the Manual method (use read_domain_labels).
DomainAssignment assign_domains(const Matrix& centroids, const DomainOptions& options);

// Manual labels: a file of lines "cluster<TAB>domain" or "cluster,domain", or
// JSON Lines {"cluster": ..., "domain": ...}; `clusters` are the heads'
// external ids in head order. InputError naming the file and line for a
// malformed line, an unknown or repeated cluster, or a head left unlabelled.
DomainAssignment read_domain_labels(const std::filesystem::path& file, const std::vector<std::string>& clusters);

// Writes "cluster<TAB>domain" lines (the format read_domain_labels reads).
void write_domain_labels(const std::filesystem::path& file, const DomainAssignment& assignment,
                         const std::vector<std::string>& clusters);

}  // namespace ldaproj
