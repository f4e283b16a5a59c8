// Domains for the hierarchical ensemble: spherical k-means (k-means++ seeds,
// optional exact balancing), average-linkage agglomeration (on k-means
// micro-clusters when there are many heads), or labels from a file.
#include "ldaproj/domains.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <unordered_map>

#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

std::string_view to_string(DomainMethod method) {
  switch (method) {
    case DomainMethod::KMeans: return "kmeans";
    case DomainMethod::Agglomerative: return "agglomerative";
    case DomainMethod::Manual: return "manual";
  }
  return "?";
}

DomainMethod parse_domain_method(std::string_view name) {
  if (name == "kmeans" || name == "k-means") return DomainMethod::KMeans;
  if (name == "agglomerative" || name == "hierarchical") return DomainMethod::Agglomerative;
  if (name == "manual") return DomainMethod::Manual;
  throw InputError("unknown domain method \"" + std::string(name) + "\" (expected kmeans, agglomerative or manual)");
}

std::vector<std::size_t> DomainAssignment::sizes() const {
  std::vector<std::size_t> out(names.size(), 0);
  for (std::size_t d : domain_of) ++out[d];
  return out;
}

namespace {

std::vector<std::string> default_names(std::size_t count) {
  std::vector<std::string> names;
  for (std::size_t d = 0; d < count; ++d) {
    std::string name = "d";  // appended, not concatenated: GCC 12 warns falsely on "d" + to_string
    name += std::to_string(d);
    names.push_back(std::move(name));
  }
  return names;
}

// scores = x * c^T
Matrix similarities(const Matrix& x, const Matrix& c) {
  Matrix s(x.rows, c.rows);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(x.rows), static_cast<int>(c.rows),
              static_cast<int>(x.cols), 1.0f, x.data.data(), static_cast<int>(x.cols), c.data.data(),
              static_cast<int>(c.cols), 0.0f, s.data.data(), static_cast<int>(c.rows));
  return s;
}

// Spherical k-means over unit rows; weights (may be empty) count each row
// that many times. Returns the label of every row; all k labels are used.
std::vector<std::size_t> spherical_kmeans(const Matrix& x, const std::vector<double>& weights, std::size_t k,
                                          std::size_t iterations, bool balanced, std::uint64_t seed) {
  const std::size_t n = x.rows, d = x.cols;
  std::mt19937_64 rng(seed);
  auto weight = [&](std::size_t i) { return weights.empty() ? 1.0 : weights[i]; };
  // k-means++ seeding on cosine distance.
  Matrix centers(k, d);
  std::vector<double> nearest(n, std::numeric_limits<double>::infinity());
  std::size_t pick = rng() % n;
  for (std::size_t c = 0; c < k; ++c) {
    std::copy(x.row(pick), x.row(pick) + d, centers.row(c));
    double total = 0;
    for (std::size_t i = 0; i < n; ++i) {
      double dot = 0;
      for (std::size_t j = 0; j < d; ++j) dot += double(x(i, j)) * centers(c, j);
      nearest[i] = std::min(nearest[i], std::max(0.0, 1.0 - dot));
      total += nearest[i] * weight(i);
    }
    if (c + 1 == k) break;
    if (total <= 0) {  // every row coincides with a center: take any unused row
      pick = (pick + 1) % n;
      continue;
    }
    double target = std::uniform_real_distribution<double>(0, total)(rng);
    for (pick = 0; pick + 1 < n; ++pick) {
      target -= nearest[pick] * weight(pick);
      if (target <= 0) break;
    }
  }
  std::vector<std::size_t> label(n, 0);
  for (std::size_t round = 0; round < iterations; ++round) {
    const Matrix s = similarities(x, centers);
    if (balanced) {
      // Confident rows first; each takes its best domain that still has room,
      // with exactly n mod k domains allowed one extra row.
      const std::size_t floor_size = n / k, extra = n % k;
      std::vector<std::size_t> order(n), size(k, 0);
      std::size_t at_ceiling = 0;
      std::iota(order.begin(), order.end(), 0);
      std::vector<float> best(n);
      for (std::size_t i = 0; i < n; ++i) best[i] = *std::max_element(s.row(i), s.row(i) + k);
      std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return best[a] > best[b]; });
      std::vector<std::size_t> prefs(k);
      for (std::size_t i : order) {
        std::iota(prefs.begin(), prefs.end(), 0);
        const float* si = s.row(i);
        std::sort(prefs.begin(), prefs.end(), [si](std::size_t a, std::size_t b) { return si[a] > si[b]; });
        for (std::size_t c : prefs) {
          const bool room = size[c] < floor_size || (size[c] == floor_size && at_ceiling < extra);
          if (!room) continue;
          if (++size[c] == floor_size + 1) ++at_ceiling;
          label[i] = c;
          break;
        }
      }
    } else {
      for (std::size_t i = 0; i < n; ++i)
        label[i] = static_cast<std::size_t>(std::max_element(s.row(i), s.row(i) + k) - s.row(i));
    }
    // New centers; an empty domain takes the row farthest from its center.
    Matrix sums(k, d);
    std::vector<double> mass(k, 0);
    for (std::size_t i = 0; i < n; ++i) {
      mass[label[i]] += weight(i);
      for (std::size_t j = 0; j < d; ++j) sums(label[i], j) += static_cast<float>(weight(i)) * x(i, j);
    }
    for (std::size_t c = 0; c < k; ++c) {
      if (mass[c] > 0) continue;
      std::size_t worst = 0;
      float worst_score = std::numeric_limits<float>::infinity();
      for (std::size_t i = 0; i < n; ++i) {
        if (mass[label[i]] > weight(i) && s(i, label[i]) < worst_score) worst_score = s(i, label[i]), worst = i;
      }
      mass[label[worst]] -= weight(worst);
      for (std::size_t j = 0; j < d; ++j) sums(label[worst], j) -= static_cast<float>(weight(worst)) * x(worst, j);
      label[worst] = c;
      mass[c] = weight(worst);
      std::copy(x.row(worst), x.row(worst) + d, sums.row(c));
    }
    Matrix previous = centers;
    centers = sums;
    for (std::size_t c = 0; c < k; ++c) {
      double sq = 0;
      for (std::size_t j = 0; j < d; ++j) sq += double(centers(c, j)) * centers(c, j);
      if (sq <= 0) std::copy(previous.row(c), previous.row(c) + d, centers.row(c));
    }
    normalize_rows(centers, "domain center");
    if (previous.data == centers.data) break;
  }
  return label;
}

// Average linkage (weighted by how many heads each item stands for), merged
// until `k` groups remain. Returns the group of every item in [0, k).
std::vector<std::size_t> average_linkage(const Matrix& x, const std::vector<double>& weights, std::size_t k) {
  const std::size_t m = x.rows;
  Matrix sim = similarities(x, x);
  std::vector<bool> active(m, true);
  std::vector<double> size(weights);
  std::vector<std::size_t> parent(m);
  std::iota(parent.begin(), parent.end(), 0);
  std::vector<std::size_t> best(m, 0);
  auto refresh = [&](std::size_t i) {
    float top = -std::numeric_limits<float>::infinity();
    for (std::size_t j = 0; j < m; ++j)
      if (j != i && active[j] && sim(i, j) > top) top = sim(i, j), best[i] = j;
  };
  for (std::size_t i = 0; i < m; ++i) refresh(i);
  for (std::size_t groups = m; groups > k; --groups) {
    std::size_t a = m;
    float top = -std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < m; ++i)
      if (active[i] && sim(i, best[i]) > top) top = sim(i, best[i]), a = i;
    const std::size_t b = best[a];
    // Lance-Williams update for average linkage: a absorbs b.
    for (std::size_t j = 0; j < m; ++j) {
      if (!active[j] || j == a || j == b) continue;
      const float merged = static_cast<float>((size[a] * sim(a, j) + size[b] * sim(b, j)) / (size[a] + size[b]));
      sim(a, j) = sim(j, a) = merged;
    }
    size[a] += size[b];
    active[b] = false;
    parent[b] = a;
    for (std::size_t i = 0; i < m; ++i) {
      if (!active[i]) continue;
      if (i == a || best[i] == a || best[i] == b) {
        refresh(i);
      } else if (sim(i, a) > sim(i, best[i])) {
        best[i] = a;
      }
    }
  }
  std::vector<std::size_t> root(m), group(m);
  std::unordered_map<std::size_t, std::size_t> number;
  for (std::size_t i = 0; i < m; ++i) {
    std::size_t r = i;
    while (parent[r] != r) r = parent[r];
    auto it = number.emplace(r, number.size()).first;
    group[i] = it->second;
  }
  return group;
}

// The spherical k-means objective: sum over groups of |sum of members|.
double cohesion(const Matrix& x, const std::vector<std::size_t>& label, std::size_t k) {
  Matrix sums(k, x.cols);
  for (std::size_t i = 0; i < x.rows; ++i)
    for (std::size_t j = 0; j < x.cols; ++j) sums(label[i], j) += x(i, j);
  double total = 0;
  for (std::size_t c = 0; c < k; ++c) {
    double sq = 0;
    for (std::size_t j = 0; j < x.cols; ++j) sq += double(sums(c, j)) * sums(c, j);
    total += std::sqrt(sq);
  }
  return total;
}

// k-means from several seeds, keeping the most cohesive split: one run can
// settle in a local optimum that merges two domains and splits another.
std::vector<std::size_t> best_kmeans(const Matrix& x, std::size_t k, std::size_t iterations, bool balanced,
                                     std::uint64_t seed, int restarts) {
  std::vector<std::size_t> best;
  double best_score = -1;
  for (int r = 0; r < restarts; ++r) {
    auto label = spherical_kmeans(x, {}, k, iterations, balanced, seed + static_cast<std::uint64_t>(r) * 7919);
    const double score = cohesion(x, label, k);
    if (score > best_score) best_score = score, best = std::move(label);
  }
  return best;
}

}  // namespace

DomainAssignment assign_domains(const Matrix& centroids, const DomainOptions& options) {
  if (options.domains == 0) throw InputError("--domains must be at least 1");
  if (options.method == DomainMethod::Manual) {
    throw InputError("manual domains come from a labels file (--labels FILE)");
  }
  if (centroids.rows == 0) throw InputError("no heads to split into domains; train a projection first");
  Matrix x = centroids;
  normalize_rows(x, "centroid");
  const std::size_t k = std::min(options.domains, x.rows);
  DomainAssignment out;
  out.names = default_names(k);
  if (options.method == DomainMethod::KMeans) {
    out.domain_of = best_kmeans(x, k, options.iterations, options.balanced, options.seed, 5);
    return out;
  }
  // Agglomerative: exact below this many heads, otherwise on k-means
  // micro-clusters (each weighted by its size) to keep time and memory O(n).
  constexpr std::size_t kMaxItems = 1500;
  if (x.rows <= kMaxItems) {
    out.domain_of = average_linkage(x, std::vector<double>(x.rows, 1.0), k);
    return out;
  }
  const std::vector<std::size_t> micro = spherical_kmeans(x, {}, kMaxItems, 10, false, options.seed);
  Matrix centers(kMaxItems, x.cols);
  std::vector<double> weights(kMaxItems, 0);
  for (std::size_t i = 0; i < x.rows; ++i) {
    weights[micro[i]] += 1;
    for (std::size_t j = 0; j < x.cols; ++j) centers(micro[i], j) += x(i, j);
  }
  normalize_rows(centers, "micro-cluster center");
  const std::vector<std::size_t> group = average_linkage(centers, weights, k);
  out.domain_of.resize(x.rows);
  for (std::size_t i = 0; i < x.rows; ++i) out.domain_of[i] = group[micro[i]];
  return out;
}

DomainAssignment read_domain_labels(const std::filesystem::path& file, const std::vector<std::string>& clusters) {
  std::ifstream in(file);
  if (!in) throw InputError("cannot read domain labels file " + file.string());
  std::unordered_map<std::string, std::size_t> head_of;
  for (std::size_t h = 0; h < clusters.size(); ++h) head_of.emplace(clusters[h], h);
  DomainAssignment out;
  out.domain_of.assign(clusters.size(), std::numeric_limits<std::size_t>::max());
  std::unordered_map<std::string, std::size_t> domain_number;
  std::string line;
  for (std::size_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[0] == '#') continue;
    const std::string where = file.string() + ":" + std::to_string(line_no);
    std::string cluster, domain;
    if (line[line.find_first_not_of(" \t")] == '{') {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw InputError(where + ": invalid JSON (" + e.what() + ")");
      }
      if (!j.contains("cluster") || !j["cluster"].is_string() || !j.contains("domain") || !j["domain"].is_string()) {
        throw InputError(where + ": expected {\"cluster\": \"...\", \"domain\": \"...\"} with string values");
      }
      cluster = j["cluster"].get<std::string>();
      domain = j["domain"].get<std::string>();
    } else {
      const std::size_t sep = line.find_first_of("\t,");
      if (sep == std::string::npos) throw InputError(where + ": expected \"cluster<TAB>domain\" or \"cluster,domain\"");
      cluster = line.substr(0, sep);
      domain = line.substr(sep + 1);
    }
    if (cluster.empty() || domain.empty()) throw InputError(where + ": empty cluster or domain");
    const auto head = head_of.find(cluster);
    if (head == head_of.end()) throw InputError(where + ": cluster \"" + cluster + "\" is not in the projection");
    if (out.domain_of[head->second] != std::numeric_limits<std::size_t>::max()) {
      throw InputError(where + ": cluster \"" + cluster + "\" is labelled twice");
    }
    auto it = domain_number.emplace(domain, domain_number.size()).first;
    if (it->second == out.names.size()) out.names.push_back(domain);
    out.domain_of[head->second] = it->second;
  }
  std::size_t missing = 0;
  std::string example;
  for (std::size_t h = 0; h < clusters.size(); ++h) {
    if (out.domain_of[h] == std::numeric_limits<std::size_t>::max()) {
      if (missing++ == 0) example = clusters[h];
    }
  }
  if (missing > 0) {
    throw InputError(file.string() + ": " + std::to_string(missing) + " clusters have no domain (e.g. \"" + example +
                     "\"); every cluster needs exactly one label");
  }
  return out;
}

void write_domain_labels(const std::filesystem::path& file, const DomainAssignment& assignment,
                         const std::vector<std::string>& clusters) {
  if (clusters.size() != assignment.domain_of.size()) throw InputError("domain labels: one label per cluster");
  const std::filesystem::path partial = file.string() + ".partial";
  {
    std::ofstream out(partial);
    for (std::size_t h = 0; h < clusters.size(); ++h)
      out << clusters[h] << '\t' << assignment.names[assignment.domain_of[h]] << '\n';
    if (!out.flush()) throw InputError("cannot write " + file.string());
  }
  std::filesystem::rename(partial, file);  // whole file or the previous one, never half
}

}  // namespace ldaproj
