// Where the hierarchical ensemble loses agreement with the dense teacher on
// ldaproj bench's synthetic heads: trains one ensemble the way `bench` does
// and prints, for the held-out queries, the teacher's routing mass on the
// domains the router runs against the most any top-k domains hold, how often
// the router's first domain is the teacher's heaviest, and the top-10 overlap
// of the ensemble and of the same students mixed by an oracle router (the
// teacher's own heaviest domains, weighted by their mass).
//
//   ensemble_diagnostic [--clusters 100000] [--top-domains 2] [--kl 0.1]
//                       [--router-epochs 40] [--router-patience 6] [--router-lr 1e-3]
//                       [--heads 8] [--keys-per-head 8] [--student-epochs 10]
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

double mean_overlap(const std::vector<std::vector<std::size_t>>& want, const std::vector<std::vector<std::size_t>>& got) {
  double sum = 0;
  for (std::size_t r = 0; r < want.size(); ++r) {
    std::size_t shared = 0;
    for (std::size_t a : got[r]) shared += static_cast<std::size_t>(std::count(want[r].begin(), want[r].end(), a));
    sum += static_cast<double>(shared) / 10.0;
  }
  return sum / static_cast<double>(want.size());
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t clusters = 100000, top = 2, domains = 8;
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
  const EnsembleReport report = train_ensemble(teacher, heads.questions, heads.question_head, assignment, o);

  const Matrix& q = heads.queries;
  Matrix used;
  const Matrix projected = EnsembleModel(report.weights).forward(q, 0, &used);
  const Matrix pooled = pool_routing(teacher.routing_weights(q, kTemperature), assignment.domain_of, domains);
  std::vector<Matrix> student_outputs;
  for (const StudentWeights& s : report.weights.students) student_outputs.push_back(StudentModel(s).forward(q));

  double routed = 0, best = 0, first_agrees = 0;
  Matrix oracle_mix(q.rows, q.cols);
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
    for (std::size_t k = 0; k < top; ++k) {
      const float w = static_cast<float>(mass[k].first / kept);
      const Matrix& out = student_outputs[mass[k].second];
      for (std::size_t j = 0; j < q.cols; ++j) oracle_mix(r, j) += w * out(r, j);
    }
  }
  const double n = static_cast<double>(q.rows);
  const auto want = top10_answers(heads.answers, teacher.project(q));
  std::printf("%zu clusters, %zu domains, top %zu; students %zu heads x %zu keys, %zu epochs; router kl %.2f, "
              "best epoch %zu of %zu\n",
              clusters, domains, top, o.student.config.num_heads, o.student.config.keys_per_head, o.student.epochs,
              o.router_kl_weight, report.router_best_epoch, report.router_epochs_run);
  std::printf("teacher mass on the router's domains %.3f (the best %zu domains hold %.3f); router's first domain is "
              "the teacher's heaviest for %.3f of the queries\n",
              routed / n, top, best / n, first_agrees / n);
  std::printf("top-10 overlap with the dense teacher: ensemble %.3f, same students with the oracle router %.3f\n",
              mean_overlap(want, top10_answers(heads.answers, projected)),
              mean_overlap(want, top10_answers(heads.answers, oracle_mix)));
  return 0;
}
