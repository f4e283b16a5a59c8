// Synthetic Q-A embeddings: a generative model with a shared direction,
// domains, clusters and per-question noise whose mixing weights are solved
// from target cosine statistics, plus the statistics themselves and a writer
// that turns the vectors into a store.
#include "ldaproj/synth.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <unordered_map>

#include "common/gemm.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

namespace {

// Clusters whose nearest neighbour is measured exactly (the rest is sampled).
constexpr std::size_t kNearestSample = 256;

double dot(const float* a, const float* b, std::size_t n) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return s;
}

// A random vector of expected unit length; in high dimension such vectors are
// nearly orthogonal, which is what lets the mixing weights set cosines.
void random_direction(float* out, std::size_t dim, std::mt19937_64& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f / std::sqrt(static_cast<float>(dim)));
  for (std::size_t j = 0; j < dim; ++j) out[j] = n(rng);
}

// Normalised mean of each cluster's (unit) questions.
Matrix cluster_centroids(const Matrix& questions, const std::vector<std::size_t>& cluster_of, std::size_t clusters) {
  Matrix c(clusters, questions.cols);
  for (std::size_t i = 0; i < questions.rows; ++i) {
    const float* src = questions.row(i);
    float* dst = c.row(cluster_of[i]);
    for (std::size_t j = 0; j < c.cols; ++j) dst[j] += src[j];
  }
  normalize_rows(c, "cluster centroid (a cluster without questions?)");
  return c;
}

}  // namespace

SimilarityStats demo_similarity_stats() {
  // measure_store_similarity on data/demo (clusters.json + extra.jsonl),
  // all-MiniLM-L6-v2; see docs/DISTILLATION.md.
  SimilarityStats s;
  s.question_to_own_centroid = 0.6877;
  s.question_pair_same_cluster = 0.4098;
  s.question_pair_other_cluster = 0.1209;
  s.centroid_pair = 0.2544;
  s.centroid_nearest = 0.5680;
  s.answer_to_own_centroid = 0.7311;
  s.answer_to_other_centroid = 0.1999;
  s.answer_pair = 0.2109;
  return s;
}

SimilarityStats measure_similarity(const Matrix& questions_in, const std::vector<std::size_t>& cluster_of_question,
                                   const Matrix& answers_in, const std::vector<std::size_t>& cluster_of_answer,
                                   std::size_t clusters, std::uint64_t seed, std::size_t max_pairs) {
  if (clusters < 2) throw InputError("similarity statistics need at least two clusters");
  if (cluster_of_question.size() != questions_in.rows || cluster_of_answer.size() != answers_in.rows) {
    throw InputError("one cluster index per question and per answer is needed");
  }
  Matrix questions = questions_in, answers = answers_in;
  normalize_rows(questions, "question");
  normalize_rows(answers, "answer");
  const std::size_t d = questions.cols;
  const Matrix centroids = cluster_centroids(questions, cluster_of_question, clusters);
  std::vector<std::vector<std::size_t>> members(clusters);
  for (std::size_t i = 0; i < questions.rows; ++i) members[cluster_of_question[i]].push_back(i);

  std::mt19937_64 rng(seed);
  auto pick = [&rng](std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng); };
  SimilarityStats s;

  for (std::size_t i = 0; i < questions.rows; ++i)
    s.question_to_own_centroid += dot(questions.row(i), centroids.row(cluster_of_question[i]), d);
  s.question_to_own_centroid /= double(questions.rows);

  // Same-cluster pairs: every pair when few, else a sample.
  std::size_t all_same = 0;
  for (const auto& m : members) all_same += m.size() * (m.size() - (m.empty() ? 0 : 1)) / 2;
  double same_sum = 0;
  std::size_t same_n = 0;
  if (all_same <= max_pairs) {
    for (const auto& m : members)
      for (std::size_t a = 0; a < m.size(); ++a)
        for (std::size_t b = a + 1; b < m.size(); ++b, ++same_n) same_sum += dot(questions.row(m[a]), questions.row(m[b]), d);
  } else {
    for (std::size_t k = 0; k < max_pairs; ++k) {
      const auto& m = members[cluster_of_question[pick(questions.rows)]];
      if (m.size() < 2) continue;
      const std::size_t a = pick(m.size());
      std::size_t b = pick(m.size() - 1);
      if (b >= a) ++b;
      same_sum += dot(questions.row(m[a]), questions.row(m[b]), d);
      ++same_n;
    }
  }
  s.question_pair_same_cluster = same_n ? same_sum / double(same_n) : 0.0;

  const std::size_t samples = std::min<std::size_t>(max_pairs, 50000);
  double other = 0, cc = 0, ao = 0, aa = 0;
  std::size_t other_n = 0, cc_n = 0, ao_n = 0, aa_n = 0;
  for (std::size_t k = 0; k < samples; ++k) {
    const std::size_t i = pick(questions.rows), j = pick(questions.rows);
    if (cluster_of_question[i] != cluster_of_question[j]) {
      other += dot(questions.row(i), questions.row(j), d);
      ++other_n;
    }
    const std::size_t a = pick(clusters), b = pick(clusters);
    if (a != b) {
      cc += dot(centroids.row(a), centroids.row(b), d);
      ++cc_n;
    }
    if (answers.rows > 0) {
      const std::size_t x = pick(answers.rows), y = pick(answers.rows);
      const std::size_t c = pick(clusters);
      if (cluster_of_answer[x] != c) {
        ao += dot(answers.row(x), centroids.row(c), d);
        ++ao_n;
      }
      if (cluster_of_answer[x] != cluster_of_answer[y]) {
        aa += dot(answers.row(x), answers.row(y), d);
        ++aa_n;
      }
    }
  }
  s.question_pair_other_cluster = other_n ? other / double(other_n) : 0.0;
  s.centroid_pair = cc_n ? cc / double(cc_n) : 0.0;
  s.answer_to_other_centroid = ao_n ? ao / double(ao_n) : 0.0;
  s.answer_pair = aa_n ? aa / double(aa_n) : 0.0;

  // Nearest other centroid, for every cluster or a sample of them.
  std::vector<std::size_t> probe(clusters);
  for (std::size_t c = 0; c < clusters; ++c) probe[c] = c;
  if (clusters > kNearestSample) {
    std::shuffle(probe.begin(), probe.end(), rng);
    probe.resize(kNearestSample);
  }
  Matrix probes(probe.size(), d);
  for (std::size_t i = 0; i < probe.size(); ++i) std::copy(centroids.row(probe[i]), centroids.row(probe[i]) + d, probes.row(i));
  Matrix sim;
  detail::gemm_abt(probes, centroids, sim);
  for (std::size_t i = 0; i < probe.size(); ++i) {
    float best = -2.0f;
    for (std::size_t c = 0; c < clusters; ++c)
      if (c != probe[i]) best = std::max(best, sim(i, c));
    s.centroid_nearest += best;
  }
  s.centroid_nearest /= double(probe.size());

  if (answers.rows > 0) {
    for (std::size_t x = 0; x < answers.rows; ++x)
      s.answer_to_own_centroid += dot(answers.row(x), centroids.row(cluster_of_answer[x]), d);
    s.answer_to_own_centroid /= double(answers.rows);
  }
  return s;
}

SimilarityStats measure_store_similarity(const Store& store, const std::string& model_name) {
  const auto model = store.find_model(model_name);
  if (!model) throw InputError("no embeddings for model \"" + model_name + "\" in " + store.path().string());
  std::unordered_map<std::int64_t, std::size_t> cluster_index;
  for (const Cluster& c : store.clusters()) cluster_index.emplace(c.id, cluster_index.size());
  const EmbeddingSet q = store.embeddings(model->id, EntityKind::Question);
  const EmbeddingSet a = store.embeddings(model->id, EntityKind::Answer);
  std::unordered_map<std::int64_t, std::size_t> q_cluster, a_cluster;
  for (const Question& x : store.questions()) q_cluster.emplace(x.id, cluster_index.at(x.cluster_id));
  for (const Answer& x : store.answers()) a_cluster.emplace(x.id, cluster_index.at(x.cluster_id));

  std::vector<std::size_t> cluster_of_question;
  for (std::int64_t id : q.ids) cluster_of_question.push_back(q_cluster.at(id));
  // One answer per cluster: the normalised mean of its answers (variants).
  const std::size_t clusters = cluster_index.size();
  Matrix answers(clusters, model->dim);
  std::vector<bool> has_answer(clusters, false), has_question(clusters, false);
  for (std::size_t i = 0; i < a.ids.size(); ++i) {
    Matrix one(1, model->dim);
    std::copy(a.vectors.row(i), a.vectors.row(i) + model->dim, one.row(0));
    normalize_rows(one, "answer embedding");
    const std::size_t c = a_cluster.at(a.ids[i]);
    has_answer[c] = true;
    for (std::size_t j = 0; j < model->dim; ++j) answers(c, j) += one(0, j);
  }
  for (std::size_t c : cluster_of_question) has_question[c] = true;
  // Only clusters with both questions and an answer take part.
  std::vector<std::size_t> remap(clusters, clusters);
  std::size_t kept = 0;
  for (std::size_t c = 0; c < clusters; ++c)
    if (has_answer[c] && has_question[c]) remap[c] = kept++;
  Matrix kept_answers(kept, model->dim);
  std::vector<std::size_t> cluster_of_answer;
  for (std::size_t c = 0; c < clusters; ++c) {
    if (remap[c] == clusters) continue;
    std::copy(answers.row(c), answers.row(c) + model->dim, kept_answers.row(remap[c]));
    cluster_of_answer.push_back(remap[c]);
  }
  Matrix kept_questions(0, model->dim);
  std::vector<std::size_t> kept_cluster_of_question;
  for (std::size_t i = 0; i < q.ids.size(); ++i) {
    const std::size_t c = remap[cluster_of_question[i]];
    if (c == clusters) continue;
    kept_questions.data.insert(kept_questions.data.end(), q.vectors.row(i), q.vectors.row(i) + model->dim);
    ++kept_questions.rows;
    kept_cluster_of_question.push_back(c);
  }
  return measure_similarity(kept_questions, kept_cluster_of_question, kept_answers, cluster_of_answer, kept);
}

SynthData generate_synthetic(const SynthOptions& o) {
  auto bad = [](const std::string& what) { throw InputError("synth: " + what); };
  if (o.clusters < 2 || o.clusters > 10'000'000) bad("--clusters must be in 2..10000000");
  if (o.questions_per_cluster < 1 || o.questions_per_cluster > 10000) bad("--questions-per-cluster must be in 1..10000");
  if (o.clusters_per_domain < 1) bad("--clusters-per-domain must be positive");
  if (o.dim < 8 || o.dim > 65536) bad("--dim must be in 8..65536");
  const SimilarityStats& t = o.target;
  const std::size_t d = o.dim, n = o.clusters, per = o.questions_per_cluster;

  // Question noise s: two questions of a cluster have cosine 1/(1+s^2).
  if (!(t.question_pair_same_cluster > 0.0 && t.question_pair_same_cluster < 1.0))
    bad("target same-cluster question cosine must be in (0, 1)");
  const double s2 = 1.0 / t.question_pair_same_cluster - 1.0;
  // A centroid of `per` questions keeps s^2/per of the noise.
  const double k = 1.0 + s2 / double(per);
  // Cluster directions c = a*shared + b*domain + e*own: clusters of one domain
  // have cosine a^2+b^2 (the nearest ones), others a^2 (most pairs).
  const double raw_pair = t.centroid_pair * k, raw_near = t.centroid_nearest * k;
  const double same_domain_share = n > 1 ? double(std::min(o.clusters_per_domain, n) - 1) / double(n - 1) : 0.0;
  // (With a single domain every pair is a same-domain pair.)
  const double b2 = same_domain_share > 0.999 ? raw_pair
                                              : std::max(0.0, (raw_near - raw_pair) / (1.0 - same_domain_share));
  const double a2 = same_domain_share > 0.999 ? 0.0 : std::max(0.0, raw_pair - same_domain_share * b2);
  const double e2 = 1.0 - a2 - b2;
  if (e2 <= 0.0) bad("target centroid similarities are too high for the question spread");
  // Answers: gamma*cluster + eta*answer-style + zeta*own.
  const double gamma = t.answer_to_own_centroid * std::sqrt(k);
  const double eta2 = std::max(0.0, t.answer_pair - gamma * gamma * raw_pair);
  const double zeta2 = 1.0 - gamma * gamma - eta2;
  if (zeta2 < 0.0) bad("target answer similarities cannot be reached");
  // Novel queries carry more noise: cosine to the centroid 1/sqrt(k (1+s_n^2)).
  const double sn2 = o.novel_to_own_centroid > 0.0
                         ? std::max(0.0, 1.0 / (k * o.novel_to_own_centroid * o.novel_to_own_centroid) - 1.0)
                         : s2;

  std::mt19937_64 rng(o.seed ^ 0x73796e7468ULL);
  std::vector<float> shared(d), style(d);
  random_direction(shared.data(), d, rng);
  random_direction(style.data(), d, rng);
  const std::size_t domains = (n + o.clusters_per_domain - 1) / o.clusters_per_domain;
  Matrix domain_dirs(domains, d);
  for (std::size_t k2 = 0; k2 < domains; ++k2) random_direction(domain_dirs.row(k2), d, rng);

  SynthData out;
  out.questions = Matrix(n * per, d);
  out.answers = Matrix(n, d);
  out.novel = Matrix(n * o.novel_per_cluster, d);
  std::vector<float> centre(d), noise(d);
  const float fa = float(std::sqrt(a2)), fb = float(std::sqrt(b2)), fe = float(std::sqrt(e2));
  const float fs = float(std::sqrt(s2)), fsn = float(std::sqrt(sn2));
  const float fg = float(gamma), fh = float(std::sqrt(eta2)), fz = float(std::sqrt(zeta2));
  for (std::size_t c = 0; c < n; ++c) {
    const float* dom = domain_dirs.row(c / o.clusters_per_domain);
    random_direction(noise.data(), d, rng);
    for (std::size_t j = 0; j < d; ++j) centre[j] = fa * shared[j] + fb * dom[j] + fe * noise[j];
    for (std::size_t q = 0; q < per; ++q) {
      random_direction(noise.data(), d, rng);
      float* row = out.questions.row(c * per + q);
      for (std::size_t j = 0; j < d; ++j) row[j] = centre[j] + fs * noise[j];
      out.cluster_of_question.push_back(c);
    }
    for (std::size_t q = 0; q < o.novel_per_cluster; ++q) {
      random_direction(noise.data(), d, rng);
      float* row = out.novel.row(c * o.novel_per_cluster + q);
      for (std::size_t j = 0; j < d; ++j) row[j] = centre[j] + fsn * noise[j];
      out.cluster_of_novel.push_back(c);
    }
    random_direction(noise.data(), d, rng);
    float* answer = out.answers.row(c);
    for (std::size_t j = 0; j < d; ++j) answer[j] = fg * centre[j] + fh * style[j] + fz * noise[j];
  }
  normalize_rows(out.questions, "synthetic question");
  normalize_rows(out.answers, "synthetic answer");
  if (out.novel.rows) normalize_rows(out.novel, "synthetic novel query");
  return out;
}

std::string write_synthetic_store(const std::filesystem::path& out, const SynthData& data, std::size_t dim) {
  std::error_code ec;
  if (std::filesystem::exists(out, ec)) {
    throw InputError(out.string() + " already exists; give --out a new file name");
  }
  const std::size_t clusters = data.answers.rows;
  auto cluster_name = [](std::size_t c) {
    char name[32];
    std::snprintf(name, sizeof name, "synth_%07zu", c);
    return std::string(name);
  };
  // The importer is the one writer of clusters, questions and answers; the
  // synthetic texts go through a JSON Lines file next to the database.
  const std::filesystem::path lines = out.string() + ".import.jsonl";
  {
    std::ofstream f(lines, std::ios::trunc);
    if (!f) throw InputError("cannot write " + lines.string() + "; check the directory of --out");
    for (std::size_t c = 0; c < clusters; ++c) {
      const std::string name = cluster_name(c);
      f << nlohmann::json{{"cluster", name}, {"answer", "synthetic answer of " + name}}.dump() << '\n';
    }
    for (std::size_t i = 0; i < data.questions.rows; ++i) {
      const std::string name = cluster_name(data.cluster_of_question[i]);
      f << nlohmann::json{{"cluster", name}, {"question", "synthetic question " + std::to_string(i) + " of " + name}}.dump()
        << '\n';
    }
  }
  Store store = Store::open(out);
  try {
    import_file(store, lines);
  } catch (...) {
    std::filesystem::remove(lines, ec);
    throw;
  }
  std::filesystem::remove(lines, ec);

  const std::string model = "synthetic-" + std::to_string(dim);
  const std::int64_t model_id = store.ensure_model(model, dim);
  std::unordered_map<std::string, std::size_t> cluster_of_name;
  for (std::size_t c = 0; c < clusters; ++c) cluster_of_name.emplace(cluster_name(c), c);
  std::unordered_map<std::int64_t, std::size_t> index_of_cluster_id;
  for (const Cluster& c : store.clusters()) index_of_cluster_id.emplace(c.id, cluster_of_name.at(c.external_id));

  constexpr std::size_t kBatch = 8192;
  auto put = [&](EntityKind kind, const std::vector<std::pair<std::int64_t, std::size_t>>& rows, const Matrix& source) {
    for (std::size_t begin = 0; begin < rows.size(); begin += kBatch) {
      const std::size_t end = std::min(rows.size(), begin + kBatch);
      Matrix m(end - begin, dim);
      std::vector<std::int64_t> ids;
      for (std::size_t i = begin; i < end; ++i) {
        ids.push_back(rows[i].first);
        std::copy(source.row(rows[i].second), source.row(rows[i].second) + dim, m.row(i - begin));
      }
      store.put_embeddings(model_id, kind, ids, m);
    }
  };
  // Questions are numbered in their text ("synthetic question <row> of ...").
  std::vector<std::pair<std::int64_t, std::size_t>> q_rows, a_rows;
  for (const Question& q : store.questions()) {
    const std::size_t start = std::string("synthetic question ").size();
    q_rows.emplace_back(q.id, std::stoull(q.text.substr(start, q.text.find(' ', start) - start)));
  }
  for (const Answer& a : store.answers()) a_rows.emplace_back(a.id, index_of_cluster_id.at(a.cluster_id));
  put(EntityKind::Question, q_rows, data.questions);
  put(EntityKind::Answer, a_rows, data.answers);
  return model;
}

}  // namespace ldaproj
