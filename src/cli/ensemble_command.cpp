// `ldaproj ensemble`: split the active projection's heads into domains, train
// one student per domain and the meta-router, and store the ensemble with the
// projection.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/scale_commands.hpp"
#include "cli/validators.hpp"
#include "ldaproj/error.hpp"

namespace ldaproj::cli {

void EnsembleCommand::add_to(CLI::App& app) {
  command = app.add_subcommand("ensemble",
                               "Train the hierarchical ensemble: domains, one student per domain, a meta-router");
  command->add_option("--db", db, "SQLite store")->required();
  command->add_option("--projection", projection, "Projection to learn (default: the active one)");
  command->add_option("--domains", domains.domains, "Number of domains (students)")
      ->capture_default_str()
      ->check(number_in(1, 65536));
  command->add_option("--domain-method", domain_method, "kmeans (over the centroids) or agglomerative")
      ->capture_default_str();
  command->add_flag("--balanced", domains.balanced, "k-means: every domain gets n/D heads (rounded)");
  command->add_option("--labels", labels,
                      "Manual domains: a file of cluster<TAB>domain lines (or cluster,domain, or JSONL); "
                      "overrides --domains")
      ->check(CLI::ExistingFile);
  command->add_option("--top-domains", options.top_domains, "Students run per query at inference")
      ->capture_default_str()
      ->check(positive_number());
  StudentConfig& sc = options.student.config;
  command->add_option("--heads", sc.num_heads, "Each student's attention heads")->capture_default_str();
  command->add_option("--keys-per-head", sc.keys_per_head, "Each student's learned keys per head")->capture_default_str();
  command->add_option("--layers", sc.layers, "Each student's stacked blocks")->capture_default_str();
  command->add_option("--variant", variant, "Each student's shape: attention, mlp-attention or block")
      ->capture_default_str();
  command->add_option("--epochs", options.student.epochs, "Maximum epochs per student")->capture_default_str();
  command->add_option("--samples", options.student.data.samples, "Generated distillation inputs per student")
      ->capture_default_str();
  command->add_option("--lr", options.student.lr, "Students' peak AdamW learning rate")->capture_default_str();
  command->add_flag("--keys-only", options.student.keys_only,
                    "Students train only their keys and values, keeping the teacher-init projections "
                    "(the end-to-end fine-tuning still trains everything)");
  command->add_option("--attention-gain", options.student.attention_gain,
                      "Students' teacher-init attention gain, as `distill --attention-gain` (0: chosen per student)")
      ->capture_default_str()
      ->check(non_negative_number());
  command->add_option("--cosine-weight", options.student.cosine_weight, "Students' cosine loss weight")
      ->capture_default_str();
  command->add_option("--router-hidden", options.router_hidden, "Meta-router hidden width")->capture_default_str();
  command->add_option("--router-epochs", options.router_epochs, "Meta-router maximum epochs")->capture_default_str();
  command->add_option("--router-lr", options.router_lr, "Meta-router peak AdamW learning rate")->capture_default_str();
  command->add_option("--router-kl-weight", options.router_kl_weight,
                      "Weight of KL(teacher routing mass per domain || router weights) next to the MSE")
      ->capture_default_str();
  command->add_option("--router-samples", options.router_data.samples, "Inputs the meta-router trains on")
      ->capture_default_str();
  command->add_option("--fine-tune-epochs", options.fine_tune_epochs,
                      "After the router: epochs of end-to-end fine-tuning of router and students together "
                      "(0: off)")
      ->capture_default_str();
  command->add_option("--fine-tune-lr", options.fine_tune_lr, "Peak AdamW learning rate of the fine-tuning")
      ->capture_default_str();
  command->add_option("--seed", options.seed, "Seed (domains, data, initialisation)")->capture_default_str();
  command->add_option("--threads", options.threads, "Threads (default: all cores)");
  command->add_flag("--json", as_json, "Print one JSON object");
  command->add_flag("--quiet", quiet, "No progress lines");
  command->footer(
      "The full teacher's output is a mix over domains: each domain's teacher weighted by the routing\n"
      "mass that falls in it. The ensemble learns that: every domain's student is distilled from its\n"
      "own heads only, and the meta-router (d -> hidden -> domains, softmax) is fitted so that the mix\n"
      "of students reproduces the full teacher (MSE, plus a KL term towards the teacher's mass per\n"
      "domain). At inference only the --top-domains heaviest students run, their weights renormalised.\n"
      "--fine-tune-epochs N then trains router and students together on exactly that sparse mix\n"
      "against the full teacher, keeping the epoch with the best validation cosine.\n"
      "Use it with `query/validate --method ensemble`; `export --ensemble` writes it as safetensors.");
}

int EnsembleCommand::run() {
  if (!std::filesystem::exists(db)) throw InputError(db + ": no such database; create it with `ldaproj import`");
  Store store = Store::open(db);
  domains.method = parse_domain_method(domain_method);
  options.student.config.variant = parse_student_variant(variant);
  domains.seed = options.seed + 1;
  std::function<void(const EnsembleProgress&)> progress;
  if (!quiet && !as_json) {
    progress = [](const EnsembleProgress& p) {
      if (p.stage == "student") {
        std::fprintf(stderr, "student %zu/%zu: epoch %zu/%zu  loss %.5f\n", p.domain + 1, p.domains, p.epoch, p.epochs,
                     p.loss);
      } else if (p.stage == "fine-tune") {
        std::fprintf(stderr, "fine-tune: epoch %zu/%zu  loss %.5f\n", p.epoch, p.epochs, p.loss);
      } else {
        std::fprintf(stderr, "meta-router: epoch %zu/%zu  loss %.5f\n", p.epoch, p.epochs, p.loss);
      }
    };
  }
  const StoreEnsembleReport result = train_projection_ensemble(store, projection, domains, labels, options, progress);
  const EnsembleReport& r = result.report;
  const EnsembleConfig& c = r.weights.config;
  if (as_json) {
    nlohmann::json out{{"projection", result.projection},
                       {"config", nlohmann::json::parse(c.to_json())},
                       {"parameters", r.weights.parameter_count()},
                       {"router_epochs_run", r.router_epochs_run},
                       {"router_best_epoch", r.router_best_epoch},
                       {"router_initial_cosine", r.router_initial_cosine},
                       {"router_cosine", r.router_cosine},
                       {"fine_tune_epochs_run", r.fine_tune_epochs_run},
                       {"fine_tune_best_epoch", r.fine_tune_best_epoch},
                       {"validation_cosine", r.validation_cosine},
                       {"routed_teacher_mass", r.routed_teacher_mass},
                       {"best_teacher_mass", r.best_teacher_mass},
                       {"seconds", r.seconds},
                       {"domains", nlohmann::json::array()}};
    for (std::size_t d = 0; d < r.domains.size(); ++d) {
      out["domains"].push_back({{"name", r.weights.domain_names[d]},
                                {"heads", r.domains[d].heads},
                                {"questions", r.domains[d].questions},
                                {"student_validation_cosine", r.domains[d].validation_cosine},
                                {"seconds", r.domains[d].seconds}});
    }
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("trained an ensemble for projection \"%s\": %zu domains, %zu parameters, top %zu domains per query\n",
              result.projection.c_str(), c.domains, r.weights.parameter_count(), c.top_domains);
  for (std::size_t d = 0; d < r.domains.size(); ++d) {
    std::printf("  %-16s %6zu heads %7zu questions  student cosine to its domain %.4f  %.1fs\n",
                r.weights.domain_names[d].c_str(), r.domains[d].heads, r.domains[d].questions,
                r.domains[d].validation_cosine, r.domains[d].seconds);
  }
  std::printf("  meta-router: best epoch %zu of %zu; validation cosine of the top-%zu mix to the full teacher %.4f "
              "(%.4f before training)\n",
              r.router_best_epoch, r.router_epochs_run, c.top_domains, r.router_cosine, r.router_initial_cosine);
  if (r.fine_tune_epochs_run > 0) {
    std::printf("  fine-tuning: best epoch %zu of %zu; validation cosine %.4f\n", r.fine_tune_best_epoch,
                r.fine_tune_epochs_run, r.validation_cosine);
  }
  std::printf("  the chosen domains hold %.3f of the teacher's routing mass on validation inputs (the best %zu "
              "domains: %.3f)\n",
              r.routed_teacher_mass, std::min(c.top_domains, c.domains), r.best_teacher_mass);
  std::printf("  %.1fs in all; saved. next: ldaproj validate --db %s --test FILE --methods multi-head,ensemble\n",
              r.seconds, db.c_str());
  return 0;
}

}  // namespace ldaproj::cli
