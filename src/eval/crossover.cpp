// The crossover study: builds each method over the same synthetic heads,
// times batch-1 latency and batched throughput, and measures agreement with
// the dense teacher on held-out queries.
#include "ldaproj/crossover.hpp"
#include "ldaproj/ensemble.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <set>
#include <sstream>

#include "ldaproj/error.hpp"
#include "ldaproj/teacher.hpp"

namespace ldaproj {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class DenseMethod final : public ScaleMethod {
 public:
  explicit DenseMethod(const MultiHeadProjection& dense) : teacher_(dense) {}
  Matrix project(const Matrix& queries) const override { return teacher_.project(queries); }
  std::size_t memory_bytes() const override { return teacher_.storage_bytes(); }

 private:
  MultiHeadProjection teacher_;
};

class SparseMethod final : public ScaleMethod {
 public:
  SparseMethod(const MultiHeadProjection& dense, float temperature, int threads, std::size_t route_k)
      : sparse_(dense, HnswOptions{.threads = threads}),
        temperature_(temperature),
        route_k_(route_k) {}
  Matrix project(const Matrix& queries) const override { return sparse_.project(queries, temperature_, route_k_); }
  std::size_t memory_bytes() const override { return sparse_.dense().storage_bytes() + sparse_.index_bytes(); }

 private:
  SparseMultiHeadProjection sparse_;
  float temperature_;
  std::size_t route_k_;
};

class StudentMethod final : public ScaleMethod {
 public:
  explicit StudentMethod(const StudentWeights& weights) : student_(weights) {}
  Matrix project(const Matrix& queries) const override {
    Matrix unit = queries;
    normalize_rows(unit, "query");
    return student_.project(unit);
  }
  std::size_t memory_bytes() const override { return student_.parameter_count() * sizeof(float); }

 private:
  StudentModel student_;
};

class EnsembleMethod final : public ScaleMethod {
 public:
  explicit EnsembleMethod(const EnsembleWeights& weights) : ensemble_(weights) {}
  Matrix project(const Matrix& queries) const override {
    Matrix unit = queries;
    normalize_rows(unit, "query");
    return ensemble_.project(unit);
  }
  std::size_t memory_bytes() const override { return ensemble_.parameter_count() * sizeof(float); }

 private:
  EnsembleModel ensemble_;
};

std::size_t student_parameters(const StudentConfig& config) { return StudentWeights::zeros(config).parameter_count(); }

// A student config for the ensemble's parameter budget: the ensemble's
// student shape with more learned keys per head.
StudentConfig matched_student(const CrossoverOptions& o, std::size_t dim) {
  StudentConfig c = o.student.config;
  c.dim = dim;
  const std::size_t hidden = 256;  // EnsembleOptions::router_hidden default
  const std::size_t budget = o.domains * student_parameters(c) + hidden * dim + hidden + o.domains * hidden + o.domains;
  const std::size_t base = student_parameters(c) - 2 * c.num_keys() * dim;  // without keys and values
  const std::size_t keys = budget > base ? (budget - base) / (2 * dim * c.layers) : c.num_keys();
  c.keys_per_head = std::max<std::size_t>(1, keys / c.num_heads);
  return c;
}

void require_training_questions(const HeadSet& heads) {
  if (heads.questions.rows == 0) throw InputError("bench: the learned methods need training questions (--training-questions)");
}

// Indices of the 10 answers with the highest cosine to each projected row.
// Queries go through in groups so the score block stays small at n = 1M.
std::vector<std::vector<std::size_t>> top10(const Matrix& answers, const Matrix& projected) {
  constexpr std::size_t kGroup = 16;
  std::vector<std::vector<std::size_t>> out(projected.rows);
  const std::size_t k = std::min<std::size_t>(10, answers.rows);
  Matrix scores(kGroup, answers.rows);
  std::vector<std::size_t> order(answers.rows);
  for (std::size_t q0 = 0; q0 < projected.rows; q0 += kGroup) {
    const std::size_t count = std::min(kGroup, projected.rows - q0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(count), static_cast<int>(answers.rows),
                static_cast<int>(answers.cols), 1.0f, projected.row(q0), static_cast<int>(projected.cols),
                answers.data.data(), static_cast<int>(answers.cols), 0.0f, scores.data.data(),
                static_cast<int>(answers.rows));
    for (std::size_t q = 0; q < count; ++q) {
      std::iota(order.begin(), order.end(), 0);
      const float* s = scores.row(q);
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                        [s](std::size_t a, std::size_t b) { return s[a] > s[b]; });
      out[q0 + q].assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
    }
  }
  return out;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const double rank = p * static_cast<double>(values.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(rank);
  const std::size_t hi = std::min(values.size() - 1, lo + 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

}  // namespace

HeadSet make_head_set(std::size_t clusters, std::size_t questions_per_cluster, std::size_t queries,
                      std::uint64_t seed, std::size_t training_questions) {
  SyntheticSpec spec;
  spec.clusters = clusters;
  spec.questions_per_cluster = questions_per_cluster;
  spec.heldout_per_cluster = 1;
  spec.seed = seed;
  HeadSet set;
  set.centroids = Matrix(clusters, spec.dim);
  set.answers = Matrix(clusters, spec.dim);
  set.queries = Matrix(0, spec.dim);
  set.cluster_domain.resize(clusters);
  set.questions = Matrix(0, spec.dim);
  // Queries are the held-out query of evenly spaced clusters.
  const std::size_t stride = std::max<std::size_t>(1, clusters / std::max<std::size_t>(1, queries));
  const std::size_t trained_clusters = std::min(clusters, training_questions / std::max<std::size_t>(1, questions_per_cluster));
  const std::size_t train_stride = trained_clusters ? std::max<std::size_t>(1, clusters / trained_clusters) : 0;
  generate_synthetic(spec, [&](const SyntheticCluster& c) {
    float* centroid = set.centroids.row(c.index);
    for (std::size_t i = 0; i < c.questions.rows; ++i)
      for (std::size_t j = 0; j < spec.dim; ++j) centroid[j] += c.questions(i, j);
    std::copy(c.answer.begin(), c.answer.end(), set.answers.row(c.index));
    set.cluster_domain[c.index] = c.domain;
    if (train_stride && c.index % train_stride == 0 && set.questions.rows + c.questions.rows <= training_questions) {
      set.questions.data.insert(set.questions.data.end(), c.questions.data.begin(), c.questions.data.end());
      set.questions.rows += c.questions.rows;
      set.question_head.insert(set.question_head.end(), c.questions.rows, c.index);
    }
    if (c.index % stride == 0 && set.queries.rows < queries) {
      set.queries.data.insert(set.queries.data.end(), c.heldout.row(0), c.heldout.row(0) + spec.dim);
      ++set.queries.rows;
      set.query_cluster.push_back(c.index);
    }
  });
  normalize_rows(set.centroids, "centroid");
  return set;
}

// Training a learned method at 100k heads takes minutes to most of an hour:
// one status line per epoch shows it is moving.
DistillObserver epoch_progress(const CrossoverOptions& o, const DistillOptions& options) {
  DistillObserver observer;
  if (!o.progress) return observer;
  observer.on_epoch = [progress = o.progress, epochs = options.epochs](const DistillEpoch& e) {
    char line[128];
    std::snprintf(line, sizeof line, "  epoch %zu/%zu: validation cosine %.4f, %.0f s", e.epoch, epochs,
                  e.validation_cosine, e.seconds);
    progress(line);
  };
  return observer;
}

std::function<void(const EnsembleProgress&)> ensemble_progress(const CrossoverOptions& o) {
  if (!o.progress) return {};
  return [progress = o.progress](const EnsembleProgress& p) {
    char line[160];
    if (p.stage == "student") {
      std::snprintf(line, sizeof line, "  student %zu/%zu: epoch %zu/%zu, loss %.5f", p.domain + 1, p.domains, p.epoch,
                    p.epochs, p.loss);
    } else {
      std::snprintf(line, sizeof line, "  %s: epoch %zu/%zu, loss %.5f", p.stage.c_str(), p.epoch, p.epochs, p.loss);
    }
    progress(line);
  };
}

std::vector<ScaleMethodFactory> scale_methods(const CrossoverOptions& o) {
  return {
      {"dense-teacher",
       [](const HeadSet&, const MultiHeadProjection& dense) { return std::make_unique<DenseMethod>(dense); }},
      {"sparse-teacher",
       [o](const HeadSet&, const MultiHeadProjection& dense) {
         return std::make_unique<SparseMethod>(dense, o.temperature, o.threads, o.route_k);
       }},
      {"student",
       [o](const HeadSet& heads, const MultiHeadProjection& dense) {
         require_training_questions(heads);
         DistillOptions options = o.student;
         options.config.dim = dense.dim();
         options.threads = o.threads;
         return std::make_unique<StudentMethod>(
             distill_student(dense, heads.questions, heads.question_head, options, epoch_progress(o, options)).weights);
       }},
      {"ensemble",
       [o](const HeadSet& heads, const MultiHeadProjection& dense) {
         require_training_questions(heads);
         DomainOptions domains;
         domains.domains = std::min(o.domains, dense.num_heads());
         domains.seed = o.seed;
         const DomainAssignment assignment = assign_domains(dense.centroids(), domains);
         EnsembleOptions options;
         options.student = o.student;
         options.student.config.dim = dense.dim();
         options.router_data.sources = o.student.data.sources;  // the router sees the students' kinds of input
         options.top_domains = o.top_domains;
         options.fine_tune_epochs = o.ensemble_fine_tune_epochs;
         options.threads = o.threads;
         options.seed = o.seed;
         return std::make_unique<EnsembleMethod>(
             train_ensemble(dense, heads.questions, heads.question_head, assignment, options, ensemble_progress(o))
                 .weights);
       }},
      {"student-matched",
       [o](const HeadSet& heads, const MultiHeadProjection& dense) {
         require_training_questions(heads);
         DistillOptions options = o.student;
         options.config = matched_student(o, dense.dim());
         options.threads = o.threads;
         return std::make_unique<StudentMethod>(
             distill_student(dense, heads.questions, heads.question_head, options, epoch_progress(o, options)).weights);
       }},
  };
}

std::vector<CrossoverResult> run_crossover(const CrossoverOptions& o,
                                           const std::function<void(const CrossoverResult&)>& on_result) {
  std::vector<ScaleMethodFactory> methods = scale_methods(o);
  if (!o.methods.empty()) {
    std::vector<ScaleMethodFactory> chosen;
    for (const std::string& name : o.methods) {
      auto it = std::find_if(methods.begin(), methods.end(), [&](const auto& m) { return m.name == name; });
      if (it == methods.end()) {
        std::string known;
        for (const auto& m : methods) known += (known.empty() ? "" : ", ") + m.name;
        throw InputError("unknown bench method \"" + name + "\" (known: " + known + ")");
      }
      chosen.push_back(*it);
    }
    methods = std::move(chosen);
  }
  if (o.queries == 0) throw InputError("bench needs at least one query");
  auto say = [&](const std::string& line) {
    if (o.progress) o.progress(line);
  };
  std::vector<CrossoverResult> results;
  for (std::size_t n : o.clusters) {
    if (n < 2) throw InputError("bench: every cluster count must be at least 2");
    say("n = " + std::to_string(n) + ": generating synthetic heads");
    HeadSet heads = make_head_set(n, o.questions_per_cluster, o.queries, o.seed, o.training_questions);
    // The reference: the dense teacher's projections of the same queries.
    const MultiHeadProjection dense(heads.centroids, heads.answers, o.temperature, {Precision::F32, o.threads});
    heads.centroids = Matrix();  // the dense teacher holds them now; at n = 1M that is 1.5 GB
    const Matrix reference = dense.project(heads.queries);
    const auto reference_top = top10(heads.answers, reference);
    for (const ScaleMethodFactory& factory : methods) {
      say("n = " + std::to_string(n) + ": " + factory.name + ": building");
      CrossoverResult r;
      r.clusters = n;
      r.method = factory.name;
      auto t0 = std::chrono::steady_clock::now();
      const std::unique_ptr<ScaleMethod> method = factory.build(heads, dense);
      r.build_seconds = seconds_since(t0);
      r.memory_bytes = method->memory_bytes();

      say("n = " + std::to_string(n) + ": " + factory.name + ": timing");
      Matrix one(1, heads.queries.cols);
      std::vector<double> latencies;
      const auto budget_start = std::chrono::steady_clock::now();
      for (std::size_t q = 0; q < heads.queries.rows; ++q) {
        std::copy(heads.queries.row(q), heads.queries.row(q) + one.cols, one.row(0));
        if (q == 0) method->project(one);  // warm-up
        t0 = std::chrono::steady_clock::now();
        method->project(one);
        latencies.push_back(seconds_since(t0) * 1e6);
        if (latencies.size() >= 20 && seconds_since(budget_start) > o.latency_budget_seconds) break;
      }
      r.p50_us = percentile(latencies, 0.5);
      r.p99_us = percentile(latencies, 0.99);
      Matrix projected;
      std::size_t calls = 0;
      t0 = std::chrono::steady_clock::now();
      do {
        projected = method->project(heads.queries);
        ++calls;
      } while (seconds_since(t0) < 0.5 && calls < 20);
      r.qps_batch = double(calls * heads.queries.rows) / seconds_since(t0);

      const auto got_top = top10(heads.answers, projected);
      double overlap = 0, cosine = 0, hits = 0;
      for (std::size_t q = 0; q < projected.rows; ++q) {
        hits += !got_top[q].empty() && got_top[q][0] == heads.query_cluster[q];
        const std::set<std::size_t> want(reference_top[q].begin(), reference_top[q].end());
        std::size_t shared = 0;
        for (std::size_t a : got_top[q]) shared += want.count(a);
        overlap += double(shared) / double(want.size());
        double dot = 0;
        for (std::size_t j = 0; j < projected.cols; ++j) dot += double(projected(q, j)) * reference(q, j);
        cosine += dot;
      }
      r.top10_overlap = overlap / double(projected.rows);
      r.mean_cosine = cosine / double(projected.rows);
      r.recall_at_1 = hits / double(projected.rows);
      results.push_back(r);
      if (on_result) on_result(r);
    }
  }
  return results;
}

std::vector<std::pair<std::size_t, std::string>> recommend(const std::vector<CrossoverResult>& results,
                                                          double min_overlap) {
  std::vector<std::pair<std::size_t, std::string>> out;
  std::set<std::size_t> sizes;
  for (const auto& r : results) sizes.insert(r.clusters);
  for (std::size_t n : sizes) {
    const CrossoverResult* best = nullptr;
    for (const auto& r : results) {
      if (r.clusters != n || r.top10_overlap < min_overlap) continue;
      if (!best || r.p50_us < best->p50_us) best = &r;
    }
    out.emplace_back(n, best ? best->method : "dense-teacher");
  }
  return out;
}

std::string crossover_svg(const std::vector<CrossoverResult>& results) {
  const double width = 640, height = 400, left = 70, right = 170, top = 20, bottom = 50;
  double min_n = 1e300, max_n = 0, min_t = 1e300, max_t = 0;
  std::vector<std::string> methods;
  for (const auto& r : results) {
    min_n = std::min(min_n, double(r.clusters));
    max_n = std::max(max_n, double(r.clusters));
    min_t = std::min(min_t, std::max(r.p50_us, 0.1));
    max_t = std::max(max_t, std::max(r.p50_us, 0.1));
    if (std::find(methods.begin(), methods.end(), r.method) == methods.end()) methods.push_back(r.method);
  }
  if (results.empty()) min_n = max_n = min_t = max_t = 1;
  const double lx0 = std::floor(std::log10(min_n)), lx1 = std::max(lx0 + 1, std::ceil(std::log10(max_n)));
  const double ly0 = std::floor(std::log10(min_t)), ly1 = std::max(ly0 + 1, std::ceil(std::log10(max_t)));
  auto x = [&](double n) { return left + (std::log10(n) - lx0) / (lx1 - lx0) * (width - left - right); };
  auto y = [&](double t) { return height - bottom - (std::log10(std::max(t, 0.1)) - ly0) / (ly1 - ly0) * (height - top - bottom); };
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (int e = static_cast<int>(lx0); e <= static_cast<int>(lx1); ++e) {
    s << "<line x1=\"" << x(std::pow(10, e)) << "\" y1=\"" << top << "\" x2=\"" << x(std::pow(10, e)) << "\" y2=\""
      << height - bottom << "\" stroke=\"#ddd\"/>\n<text x=\"" << x(std::pow(10, e)) << "\" y=\"" << height - bottom + 18
      << "\" text-anchor=\"middle\">1e" << e << "</text>\n";
  }
  for (int e = static_cast<int>(ly0); e <= static_cast<int>(ly1); ++e) {
    s << "<line x1=\"" << left << "\" y1=\"" << y(std::pow(10, e)) << "\" x2=\"" << width - right << "\" y2=\""
      << y(std::pow(10, e)) << "\" stroke=\"#ddd\"/>\n<text x=\"" << left - 6 << "\" y=\"" << y(std::pow(10, e)) + 4
      << "\" text-anchor=\"end\">1e" << e << "</text>\n";
  }
  s << "<text x=\"" << (left + width - right) / 2 << "\" y=\"" << height - 12
    << "\" text-anchor=\"middle\">clusters (heads), log scale</text>\n"
    << "<text transform=\"translate(16," << (top + height - bottom) / 2
    << ") rotate(-90)\" text-anchor=\"middle\">batch-1 p50 latency (µs), log scale</text>\n";
  for (std::size_t m = 0; m < methods.size(); ++m) {
    const char* color = colors[m % 6];
    std::vector<const CrossoverResult*> points;
    for (const auto& r : results)
      if (r.method == methods[m]) points.push_back(&r);
    std::sort(points.begin(), points.end(), [](auto* a, auto* b) { return a->clusters < b->clusters; });
    s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"";
    for (const auto* p : points) s << x(double(p->clusters)) << "," << y(p->p50_us) << " ";
    s << "\"/>\n";
    for (const auto* p : points) {
      s << "<circle cx=\"" << x(double(p->clusters)) << "\" cy=\"" << y(p->p50_us) << "\" r=\"3\" fill=\"" << color
        << "\"/>\n";
    }
    s << "<rect x=\"" << width - right + 12 << "\" y=\"" << top + 18 * m << "\" width=\"12\" height=\"12\" fill=\""
      << color << "\"/>\n<text x=\"" << width - right + 30 << "\" y=\"" << top + 18 * m + 11 << "\">" << methods[m]
      << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace ldaproj
