// Synthetic clusters: every cluster is generated from its own seeded stream,
// so any cluster can be produced alone and the set is the same however it is
// visited.
#include "ldaproj/synthetic.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "ldaproj/error.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

namespace {

std::uint64_t mix(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// noise ~ N(0, I/d): its norm is about 1 whatever d is.
void add_noise(float* out, std::size_t dim, float scale, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, scale / std::sqrt(static_cast<float>(dim)));
  for (std::size_t j = 0; j < dim; ++j) out[j] += normal(rng);
}

void normalize(float* v, std::size_t dim) {
  double sq = 0;
  for (std::size_t j = 0; j < dim; ++j) sq += double(v[j]) * v[j];
  const float inv = static_cast<float>(1.0 / std::sqrt(std::max(sq, 1e-30)));
  for (std::size_t j = 0; j < dim; ++j) v[j] *= inv;
}

}  // namespace

void generate_synthetic(const SyntheticSpec& spec, const std::function<void(const SyntheticCluster&)>& visit) {
  if (spec.clusters == 0) throw InputError("synthetic data: --clusters must be at least 1");
  if (spec.questions_per_cluster == 0) throw InputError("synthetic data: --questions-per-cluster must be at least 1");
  if (spec.dim < 2) throw InputError("synthetic data: dimension must be at least 2");
  const std::size_t d = spec.dim;
  const std::size_t domains = spec.domains > 0
                                  ? spec.domains
                                  : std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(
                                                                 std::sqrt(static_cast<double>(spec.clusters)))));
  const SimilarityProfile& p = spec.profile;

  std::mt19937_64 rng(mix(spec.seed, 0));
  Matrix domain_centers(domains, d);
  for (std::size_t k = 0; k < domains; ++k) {
    add_noise(domain_centers.row(k), d, 1.0f, rng);
    normalize(domain_centers.row(k), d);
  }

  SyntheticCluster cluster;
  cluster.questions = Matrix(spec.questions_per_cluster, d);
  cluster.heldout = Matrix(spec.heldout_per_cluster, d);
  cluster.answer.assign(d, 0.0f);
  std::vector<float> center(d);
  float scale = 1.0f;  // this cluster's spread factor
  auto sample = [&](float* out, float spread, std::mt19937_64& r) {
    spread *= scale;
    std::copy(center.begin(), center.end(), out);
    add_noise(out, d, spread, r);
    normalize(out, d);
  };
  for (std::size_t c = 0; c < spec.clusters; ++c) {
    std::mt19937_64 r(mix(spec.seed, c + 1));
    cluster.index = c;
    cluster.domain = static_cast<std::size_t>(r() % domains);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const float own_place = std::exp(p.variation * normal(r));
    scale = std::exp(p.variation * normal(r));
    // The topic center comes from its own stream, so all its clusters share it.
    const std::size_t topic = p.topics_per_domain > 0 ? static_cast<std::size_t>(r() % p.topics_per_domain) : 0;
    std::copy(domain_centers.row(cluster.domain), domain_centers.row(cluster.domain) + d, center.begin());
    if (p.topics_per_domain > 0) {
      std::mt19937_64 topic_rng(mix(spec.seed ^ 0x5bd1e995ull, cluster.domain * p.topics_per_domain + topic));
      add_noise(center.data(), d, p.topic_spread, topic_rng);
      normalize(center.data(), d);
    }
    add_noise(center.data(), d, p.cluster_spread * own_place, r);
    normalize(center.data(), d);
    for (std::size_t i = 0; i < spec.questions_per_cluster; ++i) sample(cluster.questions.row(i), p.question_spread, r);
    sample(cluster.answer.data(), p.answer_spread, r);
    for (std::size_t i = 0; i < spec.heldout_per_cluster; ++i) sample(cluster.heldout.row(i), p.novel_spread, r);
    visit(cluster);
  }
}

SimilarityStats measure_similarity(const Matrix& questions, const std::vector<std::size_t>& question_cluster,
                                   const Matrix& answers, std::size_t pairs, std::uint64_t seed) {
  if (questions.rows != question_cluster.size()) throw InputError("similarity: one cluster label per question");
  if (questions.rows == 0 || answers.rows == 0) throw InputError("similarity: no questions or answers");
  const std::size_t d = questions.cols, n = answers.rows;
  Matrix q = questions, a = answers;
  normalize_rows(q, "question");
  normalize_rows(a, "answer");
  std::vector<std::vector<std::size_t>> members(n);
  for (std::size_t i = 0; i < q.rows; ++i) {
    if (question_cluster[i] >= n) throw InputError("similarity: question cluster label out of range");
    members[question_cluster[i]].push_back(i);
  }
  Matrix centroids(n, d);
  for (std::size_t c = 0; c < n; ++c) {
    for (std::size_t i : members[c])
      for (std::size_t j = 0; j < d; ++j) centroids(c, j) += q(i, j);
    if (members[c].empty()) std::copy(a.row(c), a.row(c) + d, centroids.row(c));
  }
  normalize_rows(centroids, "centroid");
  auto dot = [d](const float* x, const float* y) {
    double s = 0;
    for (std::size_t j = 0; j < d; ++j) s += double(x[j]) * y[j];
    return s;
  };
  struct Acc {
    double sum = 0, sq = 0;
    std::size_t count = 0;
    void add(double v) { sum += v, sq += v * v, ++count; }
    double mean() const { return count ? sum / double(count) : 0.0; }
    double std() const { return count ? std::sqrt(std::max(0.0, sq / double(count) - mean() * mean())) : 0.0; }
  } intra, inter, answer, nearest;
  std::mt19937_64 rng(seed);
  for (std::size_t k = 0; k < pairs; ++k) {
    const std::size_t i = rng() % q.rows, c = question_cluster[i];
    answer.add(dot(q.row(i), a.row(c)));
    if (members[c].size() > 1) {
      std::size_t j = members[c][rng() % members[c].size()];
      if (j != i) intra.add(dot(q.row(i), q.row(j)));
    }
    if (n > 1) {
      const std::size_t x = rng() % n, y = rng() % n;
      if (x != y) inter.add(dot(centroids.row(x), centroids.row(y)));
    }
  }
  if (n > 1) {
    for (std::size_t k = 0; k < std::min<std::size_t>(n, 200); ++k) {
      const std::size_t x = rng() % n;
      double best = -1;
      for (std::size_t y = 0; y < n; ++y)
        if (y != x) best = std::max(best, dot(centroids.row(x), centroids.row(y)));
      nearest.add(best);
    }
  }
  return {intra.mean(), intra.std(), inter.mean(), inter.std(), answer.mean(), answer.std(), nearest.mean()};
}

std::string describe(const SimilarityStats& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "intra-cluster questions %.3f ± %.3f, between centroids %.3f ± %.3f, "
                "question-answer %.3f ± %.3f, nearest other centroid %.3f",
                s.intra_mean, s.intra_std, s.inter_mean, s.inter_std, s.answer_mean, s.answer_std, s.nearest_mean);
  return buf;
}

SimilarityStats write_synthetic_store(const SyntheticSpec& spec, const std::string& db,
                                      const std::string& model_name) {
  namespace fs = std::filesystem;
  if (fs::exists(db)) throw InputError(db + " already exists; synthetic data goes into a new database");
  const fs::path texts = fs::path(db).string() + ".synthetic.jsonl";
  // Texts first, through the normal importer, so the store is like any other.
  Matrix questions(0, spec.dim), answers(spec.clusters, spec.dim);
  std::vector<std::size_t> question_cluster;
  {
    std::ofstream out(texts);
    if (!out) throw InputError("cannot write " + texts.string());
    generate_synthetic(spec, [&](const SyntheticCluster& c) {
      // Plain ids and texts: every string is ASCII, so no JSON escaping is needed.
      const std::size_t k = c.index;
      out << "{\"cluster\":\"c" << k << "\",\"name\":\"synthetic cluster " << k
          << "\",\"description\":\"domain " << c.domain << "\"}\n";
      for (std::size_t i = 0; i < c.questions.rows; ++i) {
        out << "{\"cluster\":\"c" << k << "\",\"question\":\"synthetic question " << i << " of c" << k << "\"}\n";
      }
      out << "{\"cluster\":\"c" << k << "\",\"answer\":\"synthetic answer of c" << k << "\"}\n";
      questions.data.insert(questions.data.end(), c.questions.data.begin(), c.questions.data.end());
      questions.rows += c.questions.rows;
      question_cluster.insert(question_cluster.end(), c.questions.rows, c.index);
      std::copy(c.answer.begin(), c.answer.end(), answers.row(c.index));
    });
    if (!out.flush()) throw InputError("cannot write " + texts.string() + " (disk full?)");
  }
  try {
    Store store = Store::open(db);
    import_file(store, texts);
    fs::remove(texts);
    const std::int64_t model = store.ensure_model(model_name, spec.dim);
    std::unordered_map<std::string, std::size_t> cluster_index;
    for (const Cluster& c : store.clusters()) cluster_index[c.external_id] = std::stoul(c.external_id.substr(1));
    std::unordered_map<std::int64_t, std::size_t> db_cluster;
    for (const Cluster& c : store.clusters()) db_cluster[c.id] = cluster_index.at(c.external_id);
    // Questions of a cluster were written (and imported) in order.
    std::vector<std::size_t> next_question(spec.clusters, 0);
    std::vector<std::int64_t> ids;
    Matrix rows(0, spec.dim);
    auto flush = [&](EntityKind kind) {
      store.put_embeddings(model, kind, ids, rows);
      ids.clear();
      rows = Matrix(0, spec.dim);
    };
    auto append = [&](std::int64_t id, const float* v) {
      ids.push_back(id);
      rows.data.insert(rows.data.end(), v, v + spec.dim);
      ++rows.rows;
    };
    for (const Question& q : store.questions()) {
      const std::size_t c = db_cluster.at(q.cluster_id);
      append(q.id, questions.row(c * spec.questions_per_cluster + next_question[c]++));
      if (ids.size() == 20000) flush(EntityKind::Question);
    }
    if (!ids.empty()) flush(EntityKind::Question);
    for (const Answer& a : store.answers()) append(a.id, answers.row(db_cluster.at(a.cluster_id)));
    if (!ids.empty()) flush(EntityKind::Answer);
  } catch (...) {
    std::error_code ignored;
    fs::remove(texts, ignored);
    fs::remove(db, ignored);
    fs::remove(db + "-wal", ignored);
    fs::remove(db + "-shm", ignored);
    throw;
  }
  return measure_similarity(questions, question_cluster, answers);
}

}  // namespace ldaproj
