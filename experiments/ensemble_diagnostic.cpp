// Where the hierarchical ensemble loses agreement with the dense teacher on
// ldaproj bench's synthetic heads: trains one ensemble the way `bench` does
// and prints, for the held-out queries, the teacher's routing mass on the
// domains the router runs against the most any top-k domains hold, how often
// the router's first domain is the teacher's heaviest, and the top-10 overlap
// of the ensemble and of the same students mixed by an oracle router (the
// teacher's own heaviest domains, weighted by their mass).
// With --single 1 it also distils one student with all domains' keys (heads x
// keys-per-head x domains) and prints, for it and for the oracle mix, the
// overlap before training (teacher init) and after, split into queries of
// clusters whose questions were in the training set and of unseen clusters
// (the "init" lines use the init's old fixed attention gain of 200; training
// starts from the gain distill chooses). --floor-only 1 prints the overlap of
// the query itself and of the teacher init at a range of attention gains, and
// trains nothing.
//
//   ensemble_diagnostic [--clusters 100000] [--top-domains 2] [--kl 0.1]
//                       [--router-epochs 40] [--router-patience 6] [--router-lr 1e-3]
//                       [--heads 8] [--keys-per-head 8] [--student-epochs 10] [--single 0]
//                       [--keys-only 0] [--sources questions,perturbed,within,across]
//                       [--samples 8192] [--floor-only 0]
// Numbers and the runs: docs/BENCHMARKS.md (crossover section).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ldaproj/crossover.hpp"
#include "ldaproj/distill.hpp"
#include "ldaproj/domains.hpp"
#include "ldaproj/ensemble.hpp"
#include "ldaproj/student.hpp"
#include "ldaproj/teacher.hpp"

using namespace ldaproj;

namespace {

float dot(const float* a, const float* b, std::size_t n) {
  double sum = 0;
  for (std::size_t j = 0; j < n; ++j) sum += static_cast<double>(a[j]) * b[j];
  return static_cast<float>(sum);
}

std::vector<std::vector<std::size_t>> top10_answers(const Matrix& answers, const Matrix& projected) {
  std::vector<float> norms(answers.rows);
  for (std::size_t a = 0; a < answers.rows; ++a) norms[a] = std::sqrt(dot(answers.row(a), answers.row(a), answers.cols));
  std::vector<std::vector<std::size_t>> out;
  std::vector<std::pair<float, std::size_t>> scored(answers.rows);
  for (std::size_t r = 0; r < projected.rows; ++r) {
    for (std::size_t a = 0; a < answers.rows; ++a)
      scored[a] = {dot(answers.row(a), projected.row(r), answers.cols) / norms[a], a};
    std::partial_sort(scored.begin(), scored.begin() + 10, scored.end(), std::greater<>());
    std::vector<std::size_t> top;
    for (int i = 0; i < 10; ++i) top.push_back(scored[static_cast<std::size_t>(i)].second);
    out.push_back(std::move(top));
  }
  return out;
}

// Mean overlap over the queries r with keep(r) (all when keep is empty).
double mean_overlap(const std::vector<std::vector<std::size_t>>& want, const std::vector<std::vector<std::size_t>>& got,
                    const std::function<bool(std::size_t)>& keep = {}) {
  double sum = 0, count = 0;
  for (std::size_t r = 0; r < want.size(); ++r) {
    if (keep && !keep(r)) continue;
    std::size_t shared = 0;
    for (std::size_t a : got[r]) shared += static_cast<std::size_t>(std::count(want[r].begin(), want[r].end(), a));
    sum += static_cast<double>(shared) / 10.0;
    count += 1;
  }
  return count ? sum / count : 0.0;
}

// Students mixed by the teacher's own heaviest `top` domains, weighted by their renormalised mass.
Matrix oracle_mix(const Matrix& pooled, const std::vector<Matrix>& student_outputs, std::size_t top) {
  const std::size_t rows = pooled.rows, domains = pooled.cols, dim = student_outputs.front().cols;
  Matrix mix(rows, dim);
  for (std::size_t r = 0; r < rows; ++r) {
    std::vector<std::pair<float, std::size_t>> mass;
    for (std::size_t d = 0; d < domains; ++d) mass.push_back({pooled(r, d), d});
    std::sort(mass.begin(), mass.end(), std::greater<>());
    double kept = 0;
    for (std::size_t k = 0; k < top; ++k) kept += mass[k].first;
    for (std::size_t k = 0; k < top; ++k) {
      const float w = static_cast<float>(mass[k].first / kept);
      const Matrix& out = student_outputs[mass[k].second];
      for (std::size_t j = 0; j < dim; ++j) mix(r, j) += w * out(r, j);
    }
  }
  return mix;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t clusters = 100000, top = 2, domains = 8;
  bool single = false, floor_only = false;
  EnsembleOptions o;
  o.student.epochs = 10;
  o.seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--clusters") clusters = std::strtoul(value, nullptr, 10);
    else if (flag == "--top-domains") top = std::strtoul(value, nullptr, 10);
    else if (flag == "--kl") o.router_kl_weight = std::atof(value);
    else if (flag == "--router-epochs") o.router_epochs = std::strtoul(value, nullptr, 10);
    else if (flag == "--router-patience") o.router_patience = std::strtoul(value, nullptr, 10);
    else if (flag == "--router-lr") o.router_lr = std::atof(value);
    else if (flag == "--heads") o.student.config.num_heads = std::strtoul(value, nullptr, 10);
    else if (flag == "--keys-per-head") o.student.config.keys_per_head = std::strtoul(value, nullptr, 10);
    else if (flag == "--student-epochs") o.student.epochs = std::strtoul(value, nullptr, 10);
    else if (flag == "--sources") o.student.data.sources = o.router_data.sources = parse_data_sources(value);
    else if (flag == "--samples") o.student.data.samples = std::strtoul(value, nullptr, 10);
    else if (flag == "--keys-only") o.student.keys_only = std::strtoul(value, nullptr, 10) != 0;
    else if (flag == "--single") single = std::strtoul(value, nullptr, 10) != 0;
    else if (flag == "--floor-only") floor_only = std::strtoul(value, nullptr, 10) != 0;
    else {
      std::fprintf(stderr, "unknown flag %s (see the comment at the top of the source)\n", flag.c_str());
      return 2;
    }
  }
  o.top_domains = top;
  constexpr float kTemperature = 0.02f;
  // The same heads, queries and training questions as `ldaproj bench --seed 1`.
  const HeadSet heads = make_head_set(clusters, 4, 256, 1, 20000);
  const MultiHeadProjection teacher(heads.centroids, heads.answers, kTemperature);
  DomainOptions domain_options;
  domain_options.domains = domains;
  domain_options.seed = 1;
  const DomainAssignment assignment = assign_domains(teacher.centroids(), domain_options);
  o.student.config.dim = teacher.dim();
  const Matrix reference = teacher.project(heads.queries);
  const auto want = top10_answers(heads.answers, reference);
  // The floor any learned projection has to clear: ranking answers by cosine to the query itself.
  std::printf("top-10 overlap of the query itself (plain query-answer cosine) with the dense teacher: %.3f\n",
              mean_overlap(want, top10_answers(heads.answers, heads.queries)));
  std::fflush(stdout);
  if (floor_only) {
    // The teacher-init student with its attention output scaled against the
    // query term (the init uses 200, so the query term is nearly gone).
    for (std::size_t keys_per_head : {o.student.config.keys_per_head, o.student.config.keys_per_head * domains}) {
      StudentConfig c = o.student.config;
      c.keys_per_head = keys_per_head;
      const StudentWeights base = init_student(c, teacher, StudentInit::Teacher, 1);
      for (float gain : {0.0f, 0.25f, 0.5f, 1.0f, 2.0f, 4.0f, 16.0f, 200.0f}) {
        StudentWeights w = base;
        if (gain > 0.0f) {
          set_attention_gain(w, gain);
        } else {  // no attention output at all: the query alone through the block
          auto& out_proj = w.at("attention.out_proj.weight").values;
          std::fill(out_proj.begin(), out_proj.end(), 0.0f);
        }
        const Matrix out = StudentModel(w).forward(heads.queries);
        double cosine = 0;
        for (std::size_t r = 0; r < out.rows; ++r) {
          const double nr = std::sqrt(dot(out.row(r), out.row(r), out.cols));
          const double nt = std::sqrt(dot(reference.row(r), reference.row(r), out.cols));
          cosine += dot(out.row(r), reference.row(r), out.cols) / (nr * nt);
        }
        std::printf("  teacher init, %zu x %zu keys, attention gain %6.2f: overlap %.3f, cosine %.3f\n", c.num_heads,
                    keys_per_head, gain, mean_overlap(want, top10_answers(heads.answers, out)),
                    cosine / static_cast<double>(out.rows));
      }
    }
    return 0;
  }
  const EnsembleReport report = train_ensemble(teacher, heads.questions, heads.question_head, assignment, o);

  const Matrix& q = heads.queries;
  Matrix used;
  const Matrix projected = EnsembleModel(report.weights).forward(q, 0, &used);
  const Matrix pooled = pool_routing(teacher.routing_weights(q, kTemperature), assignment.domain_of, domains);
  std::vector<Matrix> student_outputs;
  for (const StudentWeights& s : report.weights.students) student_outputs.push_back(StudentModel(s).forward(q));

  double routed = 0, best = 0, first_agrees = 0;
  for (std::size_t r = 0; r < q.rows; ++r) {
    std::vector<std::pair<float, std::size_t>> mass;
    for (std::size_t d = 0; d < domains; ++d) mass.push_back({pooled(r, d), d});
    std::sort(mass.begin(), mass.end(), std::greater<>());
    double kept = 0;
    for (std::size_t k = 0; k < top; ++k) kept += mass[k].first;
    best += kept;
    std::size_t router_first = 0;
    for (std::size_t d = 0; d < domains; ++d) {
      if (used(r, d) > 0.0f) routed += pooled(r, d);
      if (used(r, d) > used(r, router_first)) router_first = d;
    }
    first_agrees += router_first == mass[0].second ? 1.0 : 0.0;
  }
  const double n = static_cast<double>(q.rows);
  std::printf("%zu clusters, %zu domains, top %zu; students %zu heads x %zu keys, %zu epochs%s; router kl %.2f, "
              "best epoch %zu of %zu\n",
              clusters, domains, top, o.student.config.num_heads, o.student.config.keys_per_head, o.student.epochs,
              o.student.keys_only ? " (keys and values only)" : "",
              o.router_kl_weight, report.router_best_epoch, report.router_epochs_run);
  std::printf("teacher mass on the router's domains %.3f (the best %zu domains hold %.3f); router's first domain is "
              "the teacher's heaviest for %.3f of the queries\n",
              routed / n, top, best / n, first_agrees / n);
  std::printf("top-10 overlap with the dense teacher: ensemble %.3f, same students with the oracle router %.3f\n",
              mean_overlap(want, top10_answers(heads.answers, projected)),
              mean_overlap(want, top10_answers(heads.answers, oracle_mix(pooled, student_outputs, top))));
  if (!single) return 0;

  // The same comparison for one student with every domain's keys, before and
  // after training, split by whether the query's cluster had training questions.
  std::vector<bool> trained_cluster(clusters, false);
  for (std::size_t h : heads.question_head) trained_cluster[h] = true;
  const auto seen = [&](std::size_t r) { return trained_cluster[heads.query_cluster[r]]; };
  const auto unseen = [&](std::size_t r) { return !trained_cluster[heads.query_cluster[r]]; };
  std::size_t seen_count = 0;
  for (std::size_t r = 0; r < q.rows; ++r) seen_count += seen(r) ? 1 : 0;
  const auto line = [&](const char* what, const Matrix& out) {
    const auto got = top10_answers(heads.answers, out);
    std::printf("  %-44s all %.3f  seen clusters %.3f  unseen %.3f\n", what, mean_overlap(want, got),
                mean_overlap(want, got, seen), mean_overlap(want, got, unseen));
  };
  std::printf("queries of clusters with training questions: %zu of %zu; distillation inputs:", seen_count, q.rows);
  for (DataSource s : o.student.data.sources) std::printf(" %s", std::string(to_string(s)).c_str());
  std::printf(" (%zu generated per student)\n", o.student.data.samples);

  // The domain students at their teacher init (before any training).
  std::vector<Matrix> initial_outputs;
  for (std::size_t d = 0; d < domains; ++d) {
    std::vector<std::size_t> members;
    for (std::size_t h = 0; h < clusters; ++h)
      if (assignment.domain_of[h] == d) members.push_back(h);
    Matrix centroids(members.size(), teacher.dim()), answers(members.size(), teacher.dim());
    for (std::size_t i = 0; i < members.size(); ++i) {
      teacher.centroid_row(members[i], centroids.row(i));
      teacher.answer_row(members[i], answers.row(i));
    }
    const MultiHeadProjection domain_teacher(std::move(centroids), std::move(answers), kTemperature);
    initial_outputs.push_back(StudentModel(
        init_student(o.student.config, domain_teacher, StudentInit::Teacher, o.seed + 1000003 * (d + 1))).forward(q));
  }
  line("domain students, oracle router, init gain 200", oracle_mix(pooled, initial_outputs, top));
  line("domain students, oracle router, trained", oracle_mix(pooled, student_outputs, top));
  line("ensemble (its own router), trained", projected);

  DistillOptions one = o.student;
  one.config.keys_per_head = o.student.config.keys_per_head * domains;
  one.seed = o.seed;
  one.data.seed = o.seed;
  line("single student (all keys), init gain 200",
       StudentModel(init_student(one.config, teacher, StudentInit::Teacher, one.seed)).forward(q));
  const DistillReport single_report = distill_student(teacher, heads.questions, heads.question_head, one);
  line("single student (all keys), trained", StudentModel(single_report.weights).forward(q));
  return 0;
}
