// `ldaproj domains`: split the heads of a trained projection into domains
// (k-means, agglomerative, or a labels file checked against the store) and
// write the cluster -> domain file the ensemble reads.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/scale_commands.hpp"
#include "cli/validators.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/store.hpp"

namespace ldaproj::cli {

void DomainsCommand::add_to(CLI::App& app) {
  command = app.add_subcommand("domains", "Split the heads of a trained projection into domains");
  command->add_option("--db", db, "SQLite database")->required();
  command->add_option("--projection", projection, "Projection name (default: the active one)");
  command->add_option("--domains", options.domains, "Number of domains (k-means, agglomerative)")
      ->capture_default_str()
      ->check(positive_number());
  command->add_option("--method", method, "kmeans (over the centroids), agglomerative or manual")
      ->capture_default_str();
  command->add_flag("--balanced", options.balanced, "k-means: domain sizes differ by at most one");
  command->add_option("--labels", labels, "manual: file of cluster<TAB>domain lines (or JSONL {cluster, domain})");
  command->add_option("--seed", options.seed, "Random seed for k-means")->capture_default_str();
  command->add_option("--out", out, "Write cluster<TAB>domain lines to this file");
  command->add_flag("--json", as_json, "Print the assignment as JSON");
}

int DomainsCommand::run() {
  options.method = parse_domain_method(method);
  if (options.method == DomainMethod::Manual && labels.empty()) {
    throw InputError("--method manual needs --labels FILE");
  }
  if (options.balanced && options.method != DomainMethod::KMeans) {
    throw InputError("--balanced works with --method kmeans only");
  }
  if (!std::filesystem::exists(db)) throw InputError("database " + db + " does not exist");
  const Store store = Store::open_read_only(db);
  const auto proj = store.load_projection(projection);
  if (!proj) throw InputError("no trained projection in " + db + "; run `ldaproj train --db " + db + "` first");
  std::vector<std::string> names;
  std::unordered_map<std::int64_t, std::string> external;
  for (const Cluster& c : store.clusters()) external.emplace(c.id, c.external_id);
  Matrix centroids(proj->heads.size(), proj->heads.empty() ? 0 : proj->heads[0].centroid.size());
  for (std::size_t h = 0; h < proj->heads.size(); ++h) {
    names.push_back(external.at(proj->heads[h].cluster_id));
    std::copy(proj->heads[h].centroid.begin(), proj->heads[h].centroid.end(), centroids.row(h));
  }
  const DomainAssignment a = options.method == DomainMethod::Manual ? read_domain_labels(labels, names)
                                                                    : assign_domains(centroids, options);
  if (!out.empty()) write_domain_labels(out, a, names);
  const auto sizes = a.sizes();
  if (as_json) {
    nlohmann::json j{{"projection", proj->name}, {"method", to_string(options.method)}, {"domains", nlohmann::json::array()}};
    for (std::size_t d = 0; d < a.domains(); ++d) {
      nlohmann::json members = nlohmann::json::array();
      for (std::size_t h = 0; h < names.size(); ++h)
        if (a.domain_of[h] == d) members.push_back(names[h]);
      j["domains"].push_back({{"name", a.names[d]}, {"size", sizes[d]}, {"clusters", members}});
    }
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("%zu heads of \"%s\" in %zu domains (%s%s):\n", names.size(), proj->name.c_str(), a.domains(),
              std::string(to_string(options.method)).c_str(), options.balanced ? ", balanced" : "");
  for (std::size_t d = 0; d < a.domains(); ++d) {
    std::string examples;
    std::size_t shown = 0;
    for (std::size_t h = 0; h < names.size() && shown < 4; ++h) {
      if (a.domain_of[h] != d) continue;
      examples += (shown++ ? ", " : "") + names[h];
    }
    if (sizes[d] > shown) examples += ", ...";
    std::printf("  %-12s %6zu  %s\n", a.names[d].c_str(), sizes[d], examples.c_str());
  }
  if (!out.empty()) std::printf("wrote %s\n", out.c_str());
  return 0;
}

}  // namespace ldaproj::cli
