// `ldaproj bench`: the crossover study on synthetic data, written as CSV and
// an SVG plot, with a recommendation per size (docs/BENCHMARKS.md).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/scale_commands.hpp"
#include "cli/validators.hpp"
#include "ldaproj/crossover.hpp"
#include "ldaproj/error.hpp"

namespace ldaproj::cli {

namespace {
template <class T>
std::vector<T> parse_list(const std::string& text, const char* flag) {
  std::vector<T> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    if constexpr (std::is_same_v<T, std::string>) {
      out.push_back(item);
    } else {
      std::size_t used = 0;
      unsigned long long v = 0;
      try {
        v = std::stoull(item, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != item.size()) throw InputError(std::string(flag) + ": \"" + item + "\" is not a whole number");
      out.push_back(static_cast<T>(v));
    }
  }
  if (out.empty()) throw InputError(std::string(flag) + " is empty");
  return out;
}
}  // namespace

void BenchCommand::add_to(CLI::App& app) {
  command = app.add_subcommand("bench",
                               "Crossover study on synthetic data: every routing method side by side per cluster "
                               "count (batch-1 latency, throughput, memory, agreement with the dense teacher)");
  command->add_option("--clusters", clusters, "Comma-separated cluster counts, e.g. 1000,10000,100000,1000000")
      ->capture_default_str();
  command->add_option("--methods", methods, "Comma-separated subset (default: all: dense-teacher,sparse-teacher,student,ensemble,"
                      "student-matched)");
  command->add_option("--route-k", route_k, "Heads the sparse teacher routes over")->capture_default_str();
  command->add_option("--temperature", temperature, "Routing temperature of every method")
      ->capture_default_str()
      ->check(positive_number());
  command->add_option("--queries", queries, "Held-out queries per size (also the throughput batch)")
      ->capture_default_str()
      ->check(positive_number());
  command->add_option("--questions-per-cluster", questions_per_cluster, "Questions averaged into each centroid")
      ->capture_default_str();
  command->add_option("--training-questions", training_questions,
                      "Questions the learned methods distil from, per size (of evenly spaced clusters)")
      ->capture_default_str();
  command->add_option("--student-epochs", student_epochs, "Epochs of every student (student, ensemble, student-matched)")
      ->capture_default_str();
  command->add_option("--student-samples", student_samples, "Generated distillation inputs per student")
      ->capture_default_str();
  command->add_option("--student-sources", student_sources,
                      "Distillation inputs of every student, as `distill --sources`; `centroids` adds inputs around "
                      "every head, also those the training questions leave out (default: questions,perturbed,within,across)");
  command->add_flag("--student-keys-only", student_keys_only,
                    "Students (student, ensemble, student-matched) train only their keys and values");
  command->add_option("--student-attention-gain", student_attention_gain,
                      "Students' teacher-init attention gain, as `distill --attention-gain` (0: chosen by "
                      "validation loss; 200 was the fixed value before)")
      ->capture_default_str()
      ->check(non_negative_number());
  command->add_option("--domains", domains, "Ensemble domains (k-means over the centroids)")->capture_default_str();
  command->add_option("--top-domains", top_domains, "Ensemble students run per query")->capture_default_str();
  command->add_option("--student-keys-per-head", student_keys_per_head,
                      "Learned keys per attention head of the student and of every ensemble student "
                      "(student-matched gets more to match the ensemble's parameters)")
      ->capture_default_str()
      ->check(positive_number());
  command->add_option("--fine-tune-epochs", fine_tune_epochs,
                      "Ensemble: epochs of end-to-end fine-tuning of router and students after the router (0: off)")
      ->capture_default_str();
  command->add_option("--threads", threads, "Thread cap (default: all cores)")->check(non_negative_number());
  command->add_option("--seed", seed, "Random seed")->capture_default_str();
  command->add_option("--csv", csv, "CSV output file")->capture_default_str();
  command->add_option("--plot", plot, "SVG plot of latency against cluster count")->capture_default_str();
  command->add_flag("--json", as_json, "One JSON object per (n, method) on standard output");
}

int BenchCommand::run() const {
  CrossoverOptions o;
  o.clusters = parse_list<std::size_t>(clusters, "--clusters");
  if (!methods.empty()) o.methods = parse_list<std::string>(methods, "--methods");
  o.route_k = route_k;
  o.temperature = temperature;
  o.queries = queries;
  o.questions_per_cluster = questions_per_cluster;
  o.threads = threads;
  o.seed = seed;
  o.training_questions = training_questions;
  o.student.epochs = student_epochs;
  o.student.data.samples = student_samples;
  o.student.keys_only = student_keys_only;
  o.student.attention_gain = student_attention_gain;
  if (!student_sources.empty()) o.student.data.sources = ldaproj::parse_data_sources(student_sources);
  o.domains = domains;
  o.top_domains = top_domains;
  o.student.config.keys_per_head = student_keys_per_head;
  o.ensemble_fine_tune_epochs = fine_tune_epochs;
  o.progress = [](const std::string& line) { std::fprintf(stderr, "  %s\n", line.c_str()); };
  if (!as_json) {
    std::printf("%-10s %-16s %10s %10s %12s %8s %8s %6s %12s %9s\n", "clusters", "method", "p50_us", "p99_us",
                "qps_batch", "top10", "cosine", "R@1", "memory_MB", "build_s");
  }
  const auto results = run_crossover(o, [&](const CrossoverResult& r) {
    if (as_json) {
      std::printf("%s\n", nlohmann::json{{"clusters", r.clusters},
                                         {"method", r.method},
                                         {"p50_us", r.p50_us},
                                         {"p99_us", r.p99_us},
                                         {"qps_batch256", r.qps_batch},
                                         {"batch", queries},
                                         {"top10_overlap", r.top10_overlap},
                                         {"mean_cosine", r.mean_cosine},
                                         {"recall_at_1", r.recall_at_1},
                                         {"memory_bytes", r.memory_bytes},
                                         {"build_seconds", r.build_seconds}}
                              .dump()
                              .c_str());
    } else {
      std::printf("%-10zu %-16s %10.1f %10.1f %12.0f %8.3f %8.4f %6.3f %12.1f %9.2f\n", r.clusters, r.method.c_str(),
                  r.p50_us, r.p99_us, r.qps_batch, r.top10_overlap, r.mean_cosine, r.recall_at_1,
                  double(r.memory_bytes) / 1e6,
                  r.build_seconds);
    }
    std::fflush(stdout);
  });
  std::ofstream out_csv(csv);
  if (!out_csv) throw InputError("cannot write " + csv);
  out_csv << "clusters,method,p50_us,p99_us,qps_batch" << queries
          << ",top10_overlap,mean_cosine,recall_at_1,memory_bytes,build_seconds\n";
  for (const auto& r : results) {
    out_csv << r.clusters << ',' << r.method << ',' << r.p50_us << ',' << r.p99_us << ',' << r.qps_batch << ','
            << r.top10_overlap << ',' << r.mean_cosine << ',' << r.recall_at_1 << ',' << r.memory_bytes << ',' << r.build_seconds << '\n';
  }
  std::ofstream out_svg(plot);
  if (!out_svg) throw InputError("cannot write " + plot);
  out_svg << crossover_svg(results);
  if (!as_json) {
    std::printf("\nrecommendation (fastest batch-1 method with top-10 overlap >= 0.95):\n");
    for (const auto& [n, method] : recommend(results)) std::printf("  %zu clusters: %s\n", n, method.c_str());
    std::printf("wrote %s and %s\n", csv.c_str(), plot.c_str());
  }
  return 0;
}

}  // namespace ldaproj::cli
