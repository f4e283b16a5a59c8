// Domain assignment: every head in exactly one non-empty domain, generator
// domains recovered on separated data, exact balancing, manual label files.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "ldaproj/domains.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/synthetic.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

// Centroids from the synthetic generator with `domains` true domains.
std::pair<Matrix, std::vector<std::size_t>> separated(std::size_t clusters, std::size_t domains) {
  SyntheticSpec spec;
  spec.clusters = clusters;
  spec.questions_per_cluster = 2;
  spec.domains = domains;
  spec.dim = 64;
  spec.profile.topic_spread = 0.3f;  // tight domains: the split is unambiguous
  spec.profile.cluster_spread = 0.3f;
  Matrix c(clusters, 64);
  std::vector<std::size_t> truth(clusters);
  generate_synthetic(spec, [&](const SyntheticCluster& k) {
    std::copy(k.questions.row(0), k.questions.row(0) + 64, c.row(k.index));
    truth[k.index] = k.domain;
  });
  return {c, truth};
}

// Fraction of heads whose domain's majority true label is their own.
double purity(const DomainAssignment& a, const std::vector<std::size_t>& truth) {
  std::map<std::size_t, std::map<std::size_t, std::size_t>> counts;
  for (std::size_t h = 0; h < truth.size(); ++h) ++counts[a.domain_of[h]][truth[h]];
  std::size_t majority = 0;
  for (const auto& [d, by_truth] : counts) {
    std::size_t top = 0;
    for (const auto& [t, n] : by_truth) top = std::max(top, n);
    majority += top;
  }
  return double(majority) / double(truth.size());
}

void expect_partition(const DomainAssignment& a, std::size_t heads, std::size_t domains) {
  ASSERT_EQ(a.domain_of.size(), heads);
  ASSERT_EQ(a.domains(), domains);
  for (std::size_t d : a.domain_of) ASSERT_LT(d, domains);
  for (std::size_t size : a.sizes()) EXPECT_GT(size, 0u);
}

TEST(Domains, KMeansCoversEveryHeadOnceAndFindsTheDomains) {
  const auto [c, truth] = separated(400, 5);
  DomainOptions o;
  o.domains = 5;
  const DomainAssignment a = assign_domains(c, o);
  expect_partition(a, 400, 5);
  EXPECT_GE(purity(a, truth), 0.95);
}

TEST(Domains, BalancedSizesDifferByAtMostOne) {
  const auto [c, truth] = separated(403, 7);
  DomainOptions o;
  o.domains = 6;  // not the true number, and 403 is not a multiple of 6
  o.balanced = true;
  const DomainAssignment a = assign_domains(c, o);
  expect_partition(a, 403, 6);
  for (std::size_t size : a.sizes()) {
    EXPECT_GE(size, 403u / 6);
    EXPECT_LE(size, 403u / 6 + 1);
  }
}

TEST(Domains, AgglomerativeExactAndOnMicroClusters) {
  for (std::size_t heads : {200u, 2500u}) {
    const auto [c, truth] = separated(heads, 4);
    DomainOptions o;
    o.domains = 4;
    o.method = DomainMethod::Agglomerative;
    const DomainAssignment a = assign_domains(c, o);
    expect_partition(a, heads, 4);
    EXPECT_GE(purity(a, truth), 0.95) << heads;
  }
}

TEST(Domains, MoreDomainsThanHeadsAndBadOptions) {
  const auto [c, truth] = separated(3, 1);
  DomainOptions o;
  o.domains = 10;
  expect_partition(assign_domains(c, o), 3, 3);
  o.domains = 0;
  EXPECT_THROW(assign_domains(c, o), InputError);
  o.domains = 2;
  o.method = DomainMethod::Manual;
  EXPECT_THROW(assign_domains(c, o), InputError);
  EXPECT_THROW(parse_domain_method("spectral"), InputError);
  EXPECT_EQ(parse_domain_method(to_string(DomainMethod::Agglomerative)), DomainMethod::Agglomerative);
}

class DomainLabels : public testing_support::TempDirTest {};

TEST_F(DomainLabels, ReadsTabCommaAndJsonLinesAndRoundTrips) {
  const std::vector<std::string> clusters{"billing", "login", "export"};
  const auto path = write_file(file("labels.txt"),
                               "# cluster -> domain\nbilling\tmoney\nlogin,account\n"
                               "{\"cluster\": \"export\", \"domain\": \"account\"}\n");
  const DomainAssignment a = read_domain_labels(path, clusters);
  expect_partition(a, 3, 2);
  EXPECT_EQ(a.names[a.domain_of[0]], "money");
  EXPECT_EQ(a.domain_of[1], a.domain_of[2]);
  write_domain_labels(file("out.tsv"), a, clusters);
  const DomainAssignment b = read_domain_labels(file("out.tsv"), clusters);
  EXPECT_EQ(b.domain_of, a.domain_of);
  EXPECT_EQ(b.names, a.names);
}

TEST_F(DomainLabels, ErrorsNameTheFileAndLine) {
  const std::vector<std::string> clusters{"a", "b"};
  auto expect_error = [&](const std::string& content, const std::string& fragment) {
    const auto path = write_file(file("bad.txt"), content);
    try {
      read_domain_labels(path, clusters);
      ADD_FAILURE() << "no error for: " << content;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error("a\tx\nzzz\ty\n", "bad.txt:2: cluster \"zzz\" is not in the projection");
  expect_error("a\tx\na\ty\nb\ty\n", "bad.txt:2: cluster \"a\" is labelled twice");
  expect_error("a\tx\n", "1 clusters have no domain (e.g. \"b\")");
  expect_error("a x\n", "bad.txt:1: expected");
  expect_error("{\"cluster\": 1, \"domain\": \"x\"}\n", "bad.txt:1: expected {");
  expect_error("{broken\n", "bad.txt:1: invalid JSON");
  EXPECT_THROW(read_domain_labels(file("missing.txt"), clusters), InputError);
}

}  // namespace
}  // namespace ldaproj
