// End-to-end: the real `ldaproj` binary on the bundled demo data, from
// import to validate, plus exit codes and error messages.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli_support.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/store.hpp"

namespace {

namespace fs = std::filesystem;

using ldaproj::testing_support::CliRun;

CliRun run(const std::string& args) { return ldaproj::testing_support::run_cli(args); }

std::string demo(const char* name) { return ldaproj::testing_support::demo_file(name); }

class CliDemo : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("ldaproj_cli_test_" + std::to_string(getpid()));
    fs::create_directories(dir_);
    db_ = (dir_ / "demo.db").string();
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static inline fs::path dir_;
  static inline std::string db_;
};

TEST_F(CliDemo, ImportEmbedTrainValidateQuery) {
  CliRun r = run("import --db " + db_ + " " + demo("clusters.json") + " " + demo("extra.jsonl"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("imported"), std::string::npos) << r.out;

  r = run("import --db " + db_ + " " + demo("clusters.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("unchanged"), std::string::npos) << r.out;

  r = run("train --db " + db_);
  EXPECT_EQ(r.code, 1) << "training before embedding must fail clearly: " << r.out;
  EXPECT_NE(r.out.find("ldaproj embed"), std::string::npos) << r.out;

  r = run("embed --db " + db_ + " --quiet");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("embed --db " + db_ + " --quiet");  // nothing left to do
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find(" 0 new embeddings"), std::string::npos) << r.out;

  r = run("train --db " + db_ + " --temperature 0.1");
  ASSERT_EQ(r.code, 0) << r.out;

  r = run("validate --db " + db_ + " --test " + demo("heldout.json") + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GE(j["queries"].template get<int>(), 50);
  const double mh = j["methods"]["multi_head"]["recall_at_1"], direct = j["methods"]["direct"]["recall_at_1"];
  EXPECT_GT(mh, direct) << r.out;
  for (const char* m : {"direct", "multi_head", "global_w"}) {
    for (const char* k : {"recall_at_1", "recall_at_5", "mrr_at_10"}) {
      const double v = j["methods"][m][k];
      EXPECT_GE(v, 0.0);
      EXPECT_LE(v, 1.0);
    }
  }

  r = run("validate --db " + db_ + " --test " + demo("extra_heldout.jsonl") + " --sweep-temperature 0.05,0.1,1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("sweep:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("temperature 0.0500"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nDCG@10"), std::string::npos) << r.out;

  r = run("query --db " + db_ + " --json --top-k 3 \"how do I get my password back\"");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto q = nlohmann::json::parse(r.out);
  EXPECT_EQ(q["answers"].size(), 3u);
  EXPECT_FALSE(q["routing"].empty());

  r = run("query --db " + db_ + " --show-routing \"how do I get my password back\"");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("routing (temperature 0.1"), std::string::npos) << r.out;

  r = run("stats --db " + db_ + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto s = nlohmann::json::parse(r.out);
  EXPECT_GE(s["clusters"].template get<int>(), 25);
  EXPECT_EQ(s["projections"].size(), 1u);
}

TEST_F(CliDemo, EmbedResumesWhereAnEarlierRunStopped) {
  const std::string db = (dir_ / "resume.db").string();
  ASSERT_EQ(run("import --db " + db + " " + demo("extra.jsonl")).code, 0);
  {
    // What an interrupted run leaves behind: some batches committed.
    ldaproj::Store store = ldaproj::Store::open(db);
    const ldaproj::Encoder encoder = ldaproj::Encoder::load(ldaproj::resolve_model_dir());
    const auto model = store.ensure_model(encoder.model_name(), encoder.dim());
    auto pending = store.missing_embeddings(model, ldaproj::EntityKind::Question);
    ASSERT_EQ(pending.size(), 16u);
    pending.resize(5);
    std::vector<std::string> texts;
    std::vector<std::int64_t> ids;
    for (const auto& p : pending) {
      texts.push_back(p.text);
      ids.push_back(p.id);
    }
    store.put_embeddings(model, ldaproj::EntityKind::Question, ids, encoder.encode(texts));
  }
  const CliRun r = run("embed --db " + db + " --batch-size 4");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find(" 13 new embeddings"), std::string::npos) << r.out;  // 11 questions + 2 answers
  EXPECT_NE(r.out.find("embedding questions: 11/11"), std::string::npos) << r.out;  // plain progress lines off a TTY
}

// The student flow: distill, query and validate with it, export and import.
TEST_F(CliDemo, DistillQueryValidateExportImport) {
  const std::string db = (dir_ / "student.db").string();
  ASSERT_EQ(run("import --db " + db + " " + demo("clusters.json")).code, 0);
  CliRun r = run("query --db " + db + " --method student hello");
  EXPECT_EQ(r.code, 1);
  ASSERT_EQ(run("embed --db " + db + " --quiet").code, 0);
  ASSERT_EQ(run("train --db " + db).code, 0);
  // The same trained store, without a student, to import into later.
  const std::string other = (dir_ / "other.db").string();
  fs::copy_file(db, other);

  r = run("query --db " + db + " --method student \"how do I get my password back\"");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("ldaproj distill"), std::string::npos) << r.out;
  r = run("export --db " + db + " --out " + (dir_ / "none.safetensors").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("has no student"), std::string::npos) << r.out;

  // A short run: a small student, few inputs, two epochs, one thread. 4 x 8 keys cover the demo's
  // 31 heads, so the teacher-aligned init already reproduces the teacher closely.
  r = run("distill --db " + db + " --heads 4 --keys-per-head 8 --samples 600 --epochs 2 --threads 1 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  // Each phase before the first epoch reports on stderr (merged here), also under --json.
  EXPECT_NE(r.out.find("distill: teacher targets over"), std::string::npos) << r.out;
  const auto d = nlohmann::json::parse(r.out.substr(r.out.find("\n{") + 1));
  EXPECT_EQ(d["config"]["num_heads"], 4);
  EXPECT_EQ(d["history"].size(), 2u);
  EXPECT_GT(d["validation_cosine"].get<double>(), 0.9);

  r = run("query --db " + db + " --method student --json --top-k 3 \"how do I get my password back\"");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["answers"].size(), 3u);

  r = run("validate --db " + db + " --test " + demo("heldout.json") + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto v = nlohmann::json::parse(r.out);
  ASSERT_TRUE(v["methods"].contains("student")) << r.out;
  const auto& agreement = v["methods"]["student"]["agreement"];
  for (const char* k : {"top10_overlap", "mean_cosine", "min_cosine"}) {
    EXPECT_GT(agreement[k].get<double>(), 0.5) << k;
    EXPECT_LE(agreement[k].get<double>(), 1.0 + 1e-9) << k;
  }
  r = run("validate --db " + db + " --test " + demo("heldout.json") + " --methods student");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("student vs teacher"), std::string::npos) << r.out;

  // Export, then import into the copy: same answers.
  const std::string file = (dir_ / "student.safetensors").string();
  r = run("export --db " + db + " --out " + file);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("import --db " + other + " " + file);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("student imported"), std::string::npos) << r.out;
  const std::string q = " --method student --json --top-k 5 \"can someone else see my albums\"";
  EXPECT_EQ(run("query --db " + db + q).out, run("query --db " + other + q).out);

  r = run("stats --db " + other + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["students"].size(), 1u);
}

TEST_F(CliDemo, EnsembleQueryValidateExportImport) {
  const std::string db = (dir_ / "ensemble.db").string();
  ASSERT_EQ(run("import --db " + db + " " + demo("clusters.json")).code, 0);
  ASSERT_EQ(run("embed --db " + db + " --quiet").code, 0);
  ASSERT_EQ(run("train --db " + db).code, 0);
  const std::string other = (dir_ / "ensemble_other.db").string();
  fs::copy_file(db, other);

  CliRun r = run("query --db " + db + " --method ensemble \"how do I get my password back\"");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("ldaproj ensemble"), std::string::npos) << r.out;

  // A short run: three domains, small students, few epochs, one thread.
  r = run("ensemble --db " + db + " --domains 3 --heads 4 --keys-per-head 4 --epochs 2 --samples 300 "
          "--router-epochs 4 --router-samples 512 --threads 1 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto e = nlohmann::json::parse(r.out);
  EXPECT_EQ(e["config"]["domains"], 3);
  ASSERT_EQ(e["domains"].size(), 3u);
  int heads = 0;
  for (const auto& d : e["domains"]) heads += d["heads"].get<int>();
  EXPECT_EQ(heads, 31);

  r = run("validate --db " + db + " --test " + demo("heldout.json") + " --json --methods multi-head,ensemble");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto v = nlohmann::json::parse(r.out);
  ASSERT_TRUE(v["methods"].contains("ensemble")) << r.out;
  for (const char* k : {"top10_overlap", "mean_cosine", "min_cosine"}) {
    const double value = v["methods"]["ensemble"]["agreement"][k].get<double>();
    EXPECT_GT(value, 0.0) << k;
    EXPECT_LE(value, 1.0 + 1e-9) << k;
  }
  EXPECT_GT(v["methods"]["ensemble"]["parameters"].get<double>(), 0);

  // One student per query gives a (possibly) different ranking but works.
  r = run("query --db " + db + " --method ensemble --top-domains 1 --json \"how do I get my password back\"");
  ASSERT_EQ(r.code, 0) << r.out;

  const std::string file = (dir_ / "ensemble.safetensors").string();
  r = run("export --db " + db + " --ensemble --out " + file);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("import --db " + other + " " + file);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("ensemble imported"), std::string::npos) << r.out;
  const std::string q = " --method ensemble --json --top-k 5 \"can someone else see my albums\"";
  EXPECT_EQ(run("query --db " + db + q).out, run("query --db " + other + q).out);
  r = run("stats --db " + other + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ensembles"].size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(r.out)["students"].size(), 0u);
}

// Students and ensembles learn one key per head from a teacher without an adapter, so distill and
// ensemble refuse a projection trained with sub-keys or a query adapter, and leave the store as it
// was: the student and ensemble of the plain projection stay, nothing new is added.
TEST_F(CliDemo, DistillAndEnsembleRefuseSubKeysAndQueryAdapterProjections) {
  const std::string db = (dir_ / "routing_options.db").string();
  ldaproj::testing_support::copy_trained_demo_db(db);
  ASSERT_EQ(run("distill --db " + db + " --heads 4 --keys-per-head 8 --samples 200 --epochs 1 --threads 1 --quiet").code,
            0);
  ASSERT_EQ(run("ensemble --db " + db + " --domains 2 --heads 2 --keys-per-head 4 --epochs 1 --samples 100 "
                "--router-epochs 1 --router-samples 64 --threads 1 --quiet")
                .code,
            0);
  // Each training makes its projection the active one.
  ASSERT_EQ(run("train --db " + db + " --name sub_keys --keys-per-head 2").code, 0);
  ASSERT_EQ(run("train --db " + db + " --name adapted --learn-keys 2 --query-adapter").code, 0);

  const CliRun before = run("stats --db " + db + " --json");
  ASSERT_EQ(before.code, 0) << before.out;
  const auto stats = nlohmann::json::parse(before.out);
  ASSERT_EQ(stats["students"].size(), 1u) << before.out;
  ASSERT_EQ(stats["ensembles"].size(), 1u) << before.out;
  const std::string plain = stats["students"][0]["projection"];
  EXPECT_EQ(stats["ensembles"][0]["projection"], plain);

  // By name, and as the active projection (adapted).
  for (const std::string projection : {" --projection sub_keys", " --projection adapted", ""}) {
    for (const std::string& command :
         {"distill --db " + db + projection + " --heads 4 --keys-per-head 8 --samples 200 --epochs 1 --threads 1",
          "ensemble --db " + db + projection + " --domains 2 --heads 2 --keys-per-head 4 --epochs 1 --samples 100 "
          "--router-epochs 1 --router-samples 64 --threads 1"}) {
      SCOPED_TRACE(command);
      const CliRun r = run(command);
      EXPECT_EQ(r.code, 1) << r.out;
      EXPECT_NE(r.out.find("routes with sub-keys or a query adapter"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("distill and ensemble do not support"), std::string::npos) << r.out;
      EXPECT_EQ(run("stats --db " + db + " --json").out, before.out);
    }
  }
  // The plain projection's student and ensemble still answer.
  for (const char* method : {"student", "ensemble"}) {
    const CliRun r = run("query --db " + db + " --projection " + plain + " --method " + method +
                         " --json \"how do I get my password back\"");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_FALSE(nlohmann::json::parse(r.out)["answers"].empty()) << r.out;
  }
}

TEST(Cli, UsageErrorsExitTwo) {
  EXPECT_EQ(run("").code, 2);
  EXPECT_EQ(run("frobnicate").code, 2);
  EXPECT_EQ(run("query --db x.db --top-k 0 hello").code, 2);
  EXPECT_EQ(run("query --db x.db --reject-below nan hello").code, 2);
  // No TEXT reads questions from standard input, which is empty here: a failure, not a usage error.
  const CliRun no_text = run("query --db x.db < /dev/null");
  EXPECT_EQ(no_text.code, 1);
  EXPECT_NE(no_text.out.find("standard input holds no questions"), std::string::npos) << no_text.out;
  EXPECT_EQ(run("train --db x.db --temperature -1").code, 2);
  const CliRun help = run("query --help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("--show-routing"), std::string::npos);
}

TEST(Cli, FailuresExitOneWithAMessage) {
  const CliRun r = run("query --db /nonexistent/dir/none.db hello");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("does not exist"), std::string::npos) << r.out;
  const CliRun empty = run("query --db /nonexistent/dir/none.db \"  \"");
  EXPECT_EQ(empty.code, 1);
  EXPECT_NE(empty.out.find("query #1 is empty"), std::string::npos) << empty.out;
  const CliRun m = run("encode --model /nonexistent/model hello");
  EXPECT_EQ(m.code, 1);
  EXPECT_NE(m.out.find("/nonexistent/model"), std::string::npos) << m.out;
}

TEST(Cli, EncodePrintsOneJsonLinePerInput) {
  const CliRun r = run("encode --json \"first text\" \"second text\"");
  ASSERT_EQ(r.code, 0) << r.out;
  std::istringstream lines(r.out);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["embedding"].size(), 384u);
    ++count;
  }
  EXPECT_EQ(count, 2);
}

TEST(Cli, EncoderPrecisionFlagGivesCloseVectors) {
  auto vector_of = [](const std::string& flags) {
    const CliRun r = run("encode --json " + flags + " \"how do I reset my password\"");
    EXPECT_EQ(r.code, 0) << r.out;
    return nlohmann::json::parse(r.out)["embedding"].get<std::vector<double>>();
  };
  const auto exact = vector_of("");
  for (const auto& [precision, min_cosine] : {std::pair{"bf16", 0.999}, std::pair{"int8", 0.995}}) {
    const auto reduced = vector_of(std::string("--encoder-precision ") + precision);
    ASSERT_EQ(reduced.size(), exact.size());
    double dot = 0.0;
    for (std::size_t i = 0; i < exact.size(); ++i) dot += exact[i] * reduced[i];
    EXPECT_GT(dot, min_cosine) << precision;  // both are unit vectors
  }
  const CliRun bad = run("encode --encoder-precision fp8 hello");
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_NE(bad.out.find("--encoder-precision"), std::string::npos) << bad.out;
}

}  // namespace
