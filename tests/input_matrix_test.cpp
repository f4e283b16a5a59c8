// The input-validation matrix beyond the importer's own (importer_test.cpp):
// invalid UTF-8 and oversized texts on every path that takes text, embeddings
// that are the wrong size, NaN, Inf or zero, broken model directories and
// safetensors headers, and databases that are from a newer schema, read-only
// or on a full disk. Each case must give a message saying what and where (and
// how to fix it), a non-zero exit from the CLI, and an unchanged store.
// docs/RELIABILITY.md lists the cases.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "demo_store.hpp"
#include "ldaproj/encoder.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/eval.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/safetensors.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/teacher.hpp"
#include "ldaproj/tokenizer.hpp"
#include "ldaproj/train.hpp"
#include "store/dump.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

namespace fs = std::filesystem;
using testing_support::CliOptions;
using testing_support::CliResult;
using testing_support::read_bytes;
using testing_support::run_cli;

const fs::path kModel = LDAPROJ_DEFAULT_MODEL_DIR;
constexpr uid_t kNobody = 65534;

std::string dump_of(const fs::path& db) {
  const Store store = Store::open_read_only(db);
  return store_detail::logical_dump(store);
}

std::string input_error(const std::function<void()>& action) {
  try {
    action();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected an InputError, got: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return {};
}

// Compared without printing: a dump runs to megabytes.
#define EXPECT_SAME_STORE(db, before) EXPECT_TRUE(dump_of(db) == (before)) << "the store changed: " << (db)

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << "no \"" << (part) << "\" in: " << (text)

// A CLI run that must fail cleanly: exit 1 with an "error:" line holding every part.
void expect_refused(const CliResult& r, const std::vector<std::string>& parts) {
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.signal, 0) << r.out;
  EXPECT_HAS(r.out, "error: ");
  for (const auto& part : parts) EXPECT_HAS(r.out, part);
}

// One small trained store (extra.jsonl, random embeddings) shared by the
// suite; each test works on its own copy.
class InputMatrix : public testing_support::TempDirTest {
 protected:
  static void SetUpTestSuite() {
    template_dir_ = fs::temp_directory_path() / ("ldaproj_matrix_" + std::to_string(getpid()));
    fs::create_directories(template_dir_);
    testing_support::make_trained_demo_store(template_dir_ / "small.db", /*small=*/true);
    testing_support::make_trained_demo_store(template_dir_ / "demo.db");
  }
  static void TearDownTestSuite() { fs::remove_all(template_dir_); }

  fs::path copy_db(const std::string& which, const fs::path& target) {
    fs::copy_file(template_dir_ / which, target, fs::copy_options::overwrite_existing);
    return target;
  }

  static inline fs::path template_dir_;
};

// ------------------------------------------------------------ text inputs

TEST_F(InputMatrix, QueryWithInvalidUtf8) {
  const fs::path db = copy_db("small.db", file("q.db"));
  const std::string before = dump_of(db);
  const CliResult r = run_cli({"query", "--db", db.string(), "fine", std::string("abc\xff" "def")});
  expect_refused(r, {"query #2: invalid UTF-8 at byte 3 (0xff)", "UTF-8"});
  EXPECT_SAME_STORE(db, before);
}

TEST_F(InputMatrix, EncodeInputWithInvalidUtf8) {
  CliOptions options;
  options.standard_input = "fine\n\xc3\x28 broken\n";
  expect_refused(run_cli({"encode"}, options), {"standard input, line 2: invalid UTF-8 at byte 0 (0xc3)"});
  expect_refused(run_cli({"encode", "ok", "\xed\xa0\x80"}), {"text #2: invalid UTF-8"});  // a surrogate
}

TEST_F(InputMatrix, HeldOutFileWithInvalidUtf8OrBrokenJson) {
  const fs::path db = copy_db("small.db", file("v.db"));
  const fs::path bad = write_file(file("heldout.jsonl"), "{\"query\":\"ok\",\"cluster\":\"x\"}\n{\"query\":\"\xfe\",\"cluster\":\"x\"}\n");
  expect_refused(run_cli({"validate", "--db", db.string(), "--test", bad.string()}),
                 {bad.string(), "invalid UTF-8 at byte 39"});
  // A pretty-printed document with a syntax error is reported as a document,
  // not as a first line that is not a record.
  const fs::path broken = write_file(file("heldout.json"), "{\n  \"clusters\": [\n    {\"id\": \"x\",]\n}\n");
  const std::string m = input_error([&] { read_test_queries(broken); });
  EXPECT_HAS(m, broken.string());
  EXPECT_HAS(m, "line 3");
  const fs::path blank = write_file(file("blank.jsonl"), "{\"query\":\"\",\"cluster\":\"x\"}\n");
  EXPECT_HAS(input_error([&] { read_test_queries(blank); }), "field \"query\" is empty");
}

TEST_F(InputMatrix, OversizedTextsAreRefusedAtImportAndQuery) {
  const fs::path db = copy_db("small.db", file("big.db"));
  const std::string before = dump_of(db);
  const std::string huge(kMaxTextBytes + 1, 'a');
  const fs::path data = write_file(file("huge.jsonl"), "{\"cluster\":\"x\",\"answer\":\"fine\"}\n"
                                                       "{\"cluster\":\"x\",\"question\":\"" + huge + "\"}\n");
  expect_refused(run_cli({"import", "--db", db.string(), data.string()}),
                 {data.string(), "line 2 (cluster \"x\")", "field \"question\"", "over the limit", "split"});
  EXPECT_SAME_STORE(db, before);
  CliOptions options;
  options.standard_input = huge + "\n";
  expect_refused(run_cli({"encode"}, options), {"standard input, line 1 is 1048577 bytes long"});
}

TEST_F(InputMatrix, LongAndEmptyTextsWithinLimitsWork) {
  if (!fs::exists(kModel / "config.json")) GTEST_SKIP() << "no bundled model; run scripts/setup.sh";
  const Encoder encoder = Encoder::load(kModel);
  // Far past the token limit: truncated, still one finite unit vector.
  std::string long_text;
  while (long_text.size() < 300000) long_text += "supercalifragilistic sync photos caf\xc3\xa9 ";
  const Matrix m = encoder.encode({long_text, "", " "});
  ASSERT_EQ(m.rows, 3u);
  for (std::size_t i = 0; i < m.rows; ++i) {
    double sq = 0;
    for (std::size_t j = 0; j < m.cols; ++j) sq += static_cast<double>(m(i, j)) * m(i, j);
    EXPECT_NEAR(sq, 1.0, 1e-4) << "row " << i;
  }
  // A 120 KB query (about the most one argument can hold) is answered.
  const fs::path db = copy_db("small.db", file("long.db"));
  const CliResult r = run_cli({"query", "--db", db.string(), "--json", long_text.substr(0, long_text.rfind(' ', 120000))});
  EXPECT_EQ(r.code, 0) << r.out.substr(0, 500);
  // The CLI refuses an empty text for encode as it does for query.
  expect_refused(run_cli({"encode", "--json", ""}), {"text #1 is empty"});
  expect_refused(run_cli({"query", "--db", db.string(), ""}), {"query #1 is empty"});
}

TEST_F(InputMatrix, QueryReadsQuestionsFromStandardInput) {
  if (!fs::exists(kModel / "config.json")) GTEST_SKIP() << "no bundled model; run scripts/setup.sh";
  const fs::path db = copy_db("small.db", file("stdin.db"));
  CliOptions options;
  options.standard_input = "how do I order prints\r\nphoto book please\n";
  for (const std::vector<std::string>& args : {std::vector<std::string>{"query", "--db", db.string(), "--json"},
                                               std::vector<std::string>{"query", "--db", db.string(), "--json", "-"}}) {
    const CliResult r = run_cli(args, options);
    ASSERT_EQ(r.code, 0) << r.out;
    std::vector<std::string> queries;
    std::size_t begin = 0;
    for (std::size_t end = r.out.find('\n'); end != std::string::npos; begin = end + 1, end = r.out.find('\n', begin)) {
      queries.push_back(nlohmann::json::parse(r.out.substr(begin, end - begin)).at("query"));
    }
    EXPECT_EQ(queries, (std::vector<std::string>{"how do I order prints", "photo book please"}));
  }
  options.standard_input = "how do I order prints\n  \nphoto book please\n";
  expect_refused(run_cli({"query", "--db", db.string(), "-"}, options), {"standard input, line 2 is empty"});
  expect_refused(run_cli({"query", "--db", db.string()}), {"standard input holds no questions"});
}

TEST_F(InputMatrix, NumericFlagsRefuseNonFiniteValuesAndNameTheirRange) {
  const fs::path db = copy_db("small.db", file("flags.db"));
  auto expect_usage_error = [](const CliResult& r, const std::string& part) {
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_HAS(r.out, part);
    EXPECT_EQ(r.out.find("179769"), std::string::npos) << r.out;  // the largest double, printed in full
  };
  for (const char* bad : {"nan", "inf", "-inf", "NaN"}) {
    SCOPED_TRACE(bad);
    expect_usage_error(run_cli({"query", "--db", db.string(), "--reject-below", bad, "hello"}), "is not a finite number");
    expect_usage_error(run_cli({"query", "--db", db.string(), "--temperature", bad, "hello"}), "is not a finite number");
    expect_usage_error(run_cli({"query", "--db", db.string(), "--blend-direct", bad, "hello"}), "is not a finite number");
  }
  expect_usage_error(run_cli({"query", "--db", db.string(), "--temperature", "-1", "hello"}),
                     "-1 is out of range; give a positive number");
  expect_usage_error(run_cli({"embed", "--db", db.string(), "--threads", "-2"}), "-2 is out of range; give a number >= 0");
  expect_usage_error(run_cli({"query", "--db", db.string(), "--blend-questions", "2", "hello"}),
                     "2 is out of range; give a number from 0 to 0.999");
  expect_usage_error(run_cli({"query", "--db", db.string(), "--max-tokens", "600", "hello"}),
                     "give a number from 2 to 512");
  expect_usage_error(run_cli({"query", "--db", db.string(), "--temperature", "warm", "hello"}), "\"warm\" is not a number");
}

TEST_F(InputMatrix, DirectoriesAndDevicesAreNamedAsSuch) {
  const fs::path dir = file("a-directory");
  fs::create_directories(dir);
  const fs::path data = write_file(file("x.jsonl"), "{\"cluster\":\"x\",\"question\":\"q\"}\n{\"cluster\":\"x\",\"answer\":\"a\"}\n");
  for (const std::string command : {"stats", "embed", "train"}) {
    SCOPED_TRACE(command);
    const CliResult on_dir = run_cli({command, "--db", dir.string()});
    expect_refused(on_dir, {dir.string() + " is a directory, not a database"});
    EXPECT_EQ(on_dir.out.find("create it with"), std::string::npos) << on_dir.out;
    expect_refused(run_cli({command, "--db", "/dev/null"}), {"/dev/null is not a regular file"});
  }
  expect_refused(run_cli({"query", "--db", dir.string(), "hello"}), {"is a directory, not a database"});
  expect_refused(run_cli({"import", "--db", dir.string(), data.string()}), {dir.string() + " is a directory"});
  expect_refused(run_cli({"import", "--db", "/dev/null", data.string()}), {"/dev/null is not a regular file"});
  const fs::path db = file("fresh.db");
  expect_refused(run_cli({"import", "--db", db.string(), "/dev/null"}), {"/dev/null: is a device, not a file"});
  EXPECT_EQ(run_cli({"import", "--db", db.string(), dir.string()}).code, 2);  // CLI11: "is actually a directory"
}

// ------------------------------------------------------------ staleness

TEST_F(InputMatrix, StalenessNamesWhatEmbedAndTrainWouldFix) {
  const fs::path db = file("stale.db");
  const fs::path data = write_file(file("faq.jsonl"),
                                   "{\"cluster\":\"a\",\"question\":\"qa1\"}\n{\"cluster\":\"a\",\"question\":\"qa2\"}\n"
                                   "{\"cluster\":\"a\",\"answer\":\"answer a\"}\n"
                                   "{\"cluster\":\"b\",\"question\":\"qb1\"}\n{\"cluster\":\"b\",\"answer\":\"answer b\"}\n");
  {
    Store store = Store::open(db);
    import_file(store, data);
    const Staleness raw = store.staleness();
    EXPECT_EQ(raw.model, "");
    EXPECT_EQ(raw.questions_without_embedding, 3);
    EXPECT_EQ(raw.answers_without_embedding, 2);
    testing_support::embed_randomly(store);
    train_teacher(store, testing_support::kBundledModelName, {});
    const Staleness fresh = store.staleness();
    EXPECT_FALSE(fresh.any()) << describe_staleness(fresh, "x").front();
    EXPECT_EQ(fresh.model, testing_support::kBundledModelName);
    EXPECT_FALSE(fresh.projection.empty());
  }
  const CliResult clean = run_cli({"stats", "--db", db.string()});
  EXPECT_EQ(clean.code, 0) << clean.out;
  EXPECT_EQ(clean.out.find("warning: "), std::string::npos) << clean.out;

  // Cluster a's answer is edited, b gains a question, c is new.
  write_file(data, "{\"cluster\":\"a\",\"question\":\"qa1\"}\n{\"cluster\":\"a\",\"question\":\"qa2\"}\n"
                   "{\"cluster\":\"a\",\"answer\":\"answer a, edited\"}\n"
                   "{\"cluster\":\"b\",\"question\":\"qb1\"}\n{\"cluster\":\"b\",\"question\":\"qb2\"}\n"
                   "{\"cluster\":\"b\",\"answer\":\"answer b\"}\n"
                   "{\"cluster\":\"c\",\"question\":\"qc1\"}\n{\"cluster\":\"c\",\"answer\":\"answer c\"}\n");
  ASSERT_EQ(run_cli({"import", "--db", db.string(), data.string()}).code, 0);
  {
    const Store store = Store::open_read_only(db);
    const Staleness s = store.staleness();
    EXPECT_EQ(s.questions_without_embedding, 2);
    EXPECT_EQ(s.answers_without_embedding, 2);
    EXPECT_EQ(s.clusters_without_head, 1);
    EXPECT_EQ(s.clusters_changed, 2);
  }
  const CliResult stats = run_cli({"stats", "--db", db.string(), "--json"});
  ASSERT_EQ(stats.code, 0) << stats.out;
  const nlohmann::json staleness = nlohmann::json::parse(stats.out).at("staleness");
  EXPECT_EQ(staleness.at("questions_without_embedding"), 2);
  EXPECT_EQ(staleness.at("answers_without_embedding"), 2);
  EXPECT_EQ(staleness.at("clusters_without_head"), 1);
  EXPECT_EQ(staleness.at("clusters_changed"), 2);
  ASSERT_EQ(staleness.at("warnings").size(), 3u);
  EXPECT_HAS(staleness.at("warnings")[0].get<std::string>(), "2 questions and 2 answers have no");
  EXPECT_HAS(staleness.at("warnings")[0].get<std::string>(), "`ldaproj embed --db " + db.string() + "`");
  EXPECT_HAS(staleness.at("warnings")[1].get<std::string>(), "1 cluster has no head");
  EXPECT_HAS(staleness.at("warnings")[2].get<std::string>(), "2 clusters' questions or answers changed");
  EXPECT_HAS(staleness.at("warnings")[2].get<std::string>(), "`ldaproj train --db " + db.string() + "`");
  if (fs::exists(kModel / "config.json")) {
    const CliResult text = run_cli({"query", "--db", db.string(), "qb1"});
    EXPECT_EQ(text.code, 0) << text.out;
    EXPECT_HAS(text.out, "warning: 2 questions and 2 answers have no");
    const CliResult json = run_cli({"query", "--db", db.string(), "--json", "qb1"});
    ASSERT_EQ(json.code, 0) << json.out;
    EXPECT_EQ(nlohmann::json::parse(json.out).at("warnings").size(), 3u);
  }
  {
    Store store = Store::open(db);
    testing_support::embed_randomly(store, 7);
    const Staleness embedded = store.staleness();
    EXPECT_EQ(embedded.questions_without_embedding + embedded.answers_without_embedding, 0);
    EXPECT_EQ(embedded.clusters_without_head, 1);
    EXPECT_EQ(embedded.clusters_changed, 2);
    train_teacher(store, testing_support::kBundledModelName, {});
    EXPECT_FALSE(store.staleness().any());
  }
}

// ------------------------------------------------------------ embeddings

TEST_F(InputMatrix, ZeroEmbeddingsAndHeadsAreRefused) {
  const fs::path db = copy_db("small.db", file("zero.db"));
  Store store = Store::open(db);
  const std::string before = store_detail::logical_dump(store);
  const auto model = store.find_model(testing_support::kBundledModelName);
  ASSERT_TRUE(model.has_value());
  const EmbeddingSet answers = store.embeddings(model->id, EntityKind::Answer);
  Matrix vectors = answers.vectors;
  std::fill(vectors.row(1), vectors.row(1) + vectors.cols, 0.0f);
  const std::string m = input_error([&] { store.put_embeddings(model->id, EntityKind::Answer, answers.ids, vectors); });
  EXPECT_HAS(m, "answer " + std::to_string(answers.ids[1]));
  EXPECT_HAS(m, "zero vector");

  Projection projection = *store.load_projection();
  projection.name = "with_zero_head";
  std::fill(projection.heads[0].centroid.begin(), projection.heads[0].centroid.end(), 0.0f);
  EXPECT_HAS(input_error([&] { store.save_projection(projection); }), "centroid is a zero vector");
  EXPECT_TRUE(store_detail::logical_dump(store) == before) << "the store changed";
}

TEST_F(InputMatrix, BadQueryEmbeddingsAreClearErrorsForEveryMethod) {
  const fs::path db = copy_db("small.db", file("search.db"));
  const Store store = Store::open_read_only(db);
  const Searcher searcher = Searcher::load(store);
  const std::size_t dim = testing_support::kBundledModelDim;
  struct Case {
    const char* name;
    Matrix queries;
    const char* expect;
  };
  std::vector<Case> cases;
  cases.push_back({"wrong dimension", Matrix(1, dim - 1), "dimension 383"});
  cases.push_back({"no columns", Matrix(2, 0), "dimension 0"});
  Matrix nan = testing_support::random_unit_rows(2, dim, 3);
  nan(1, 7) = std::numeric_limits<float>::quiet_NaN();
  cases.push_back({"NaN", nan, "NaN or Inf"});
  Matrix inf = testing_support::random_unit_rows(1, dim, 4);
  inf(0, 0) = -std::numeric_limits<float>::infinity();
  cases.push_back({"Inf", inf, "NaN or Inf"});
  cases.push_back({"zero", Matrix(1, dim), "zero vector"});
  Matrix ragged = testing_support::random_unit_rows(2, dim, 6);
  ragged.data.resize(dim + 3);
  cases.push_back({"data shorter than its shape", ragged, "holds"});
  for (const Method method : kAllMethods) {
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(to_string(method)) + ": " + c.name);
      SearchOptions options;
      options.method = method;
      options.routing_top = 3;
      EXPECT_HAS(input_error([&] { (void)searcher.search(c.queries, options); }), c.expect);
    }
  }
  // Absurd but harmless options are clamped, not trusted.
  SearchOptions options;
  options.top_k = std::numeric_limits<std::size_t>::max();
  const auto results = searcher.search(testing_support::random_unit_rows(1, dim, 7), options);
  EXPECT_EQ(results[0].answers.size(), 2u);  // one per cluster
  options.temperature = std::numeric_limits<float>::quiet_NaN();
  EXPECT_HAS(input_error([&] { (void)searcher.search(testing_support::random_unit_rows(1, dim, 8), options); }),
             "temperature");
}

TEST_F(InputMatrix, DamagedVectorsInTheDatabaseAreReportedNotServed) {
  const fs::path db = copy_db("small.db", file("damaged.db"));
  // A zero vector written behind ldaproj's back into the active projection.
  testing_support::raw_sql(db, "UPDATE projection_heads SET answer = zeroblob(1536) WHERE cluster_id = "
                               "(SELECT min(cluster_id) FROM projection_heads)");
  const Store store = Store::open_read_only(db);
  const std::string m = input_error([&] { (void)Searcher::load(store); });
  EXPECT_HAS(m, "zero vector");
  EXPECT_HAS(m, "projection \"multi_head_all-MiniLM-L6-v2\" in " + db.string());
  EXPECT_HAS(m, "ldaproj train");
}

// ------------------------------------------------------------ model directory

class ModelDirectory : public testing_support::TempDirTest {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel / "config.json")) GTEST_SKIP() << "no bundled model; run scripts/setup.sh";
    TempDirTest::SetUp();
  }
  // A copy of the bundled model; the weights are linked unless `copy_weights`.
  fs::path model_copy(const std::string& name, bool copy_weights = false) {
    const fs::path d = file(name);
    fs::create_directories(d);
    fs::copy_file(kModel / "config.json", d / "config.json");
    fs::copy_file(kModel / "tokenizer.json", d / "tokenizer.json");
    if (copy_weights) {
      fs::copy_file(kModel / "model.fp16.safetensors", d / "model.fp16.safetensors");
    } else {
      fs::create_symlink(kModel / "model.fp16.safetensors", d / "model.fp16.safetensors");
    }
    return d;
  }
  std::string load_error(const fs::path& dir) {
    return input_error([&] { (void)Encoder::load(dir); });
  }
  static void edit_json(const fs::path& path, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(read_bytes(path));
    edit(j);
    std::ofstream(path, std::ios::trunc) << j.dump();
  }
};

TEST_F(ModelDirectory, MissingOrUnreadableFiles) {
  fs::path d = model_copy("no-weights");
  fs::remove(d / "model.fp16.safetensors");
  std::string m = load_error(d);
  EXPECT_HAS(m, d.string());
  EXPECT_HAS(m, "has no model.safetensors");

  d = model_copy("bad-config");
  write_file(d / "config.json", "{\"hidden_size\": 384,");
  m = load_error(d);
  EXPECT_HAS(m, (d / "config.json").string());
  EXPECT_HAS(m, "not valid JSON");
  write_file(d / "config.json", "[384]");
  EXPECT_HAS(load_error(d), "expected a JSON object");

  d = model_copy("bad-tokenizer");
  write_file(d / "tokenizer.json", "");
  m = load_error(d);
  EXPECT_HAS(m, (d / "tokenizer.json").string());
  EXPECT_HAS(m, "not valid JSON");

  const fs::path not_a_dir = write_file(file("model-file"), "x");
  EXPECT_HAS(input_error([&] { (void)resolve_model_dir(not_a_dir); }), "does not exist");
  expect_refused(run_cli({"encode", "--model", (d / "tokenizer.json").string(), "hello"}), {"tokenizer.json"});
  expect_refused(run_cli({"encode", "--model", d.string(), "hello"}), {"tokenizer.json", "not valid JSON"});
}

TEST_F(ModelDirectory, TokenizerThatDoesNotFitTheWeights) {
  fs::path d = model_copy("wrong-type");
  edit_json(d / "tokenizer.json", [](nlohmann::json& j) { j["model"]["type"] = "BPE"; });
  EXPECT_HAS(load_error(d), "\"model.type\" must be \"WordPiece\"");

  d = model_copy("id-past-table");
  edit_json(d / "tokenizer.json", [](nlohmann::json& j) { j["model"]["vocab"]["zzzextra"] = 40000; });
  std::string m = load_error(d);
  EXPECT_HAS(m, "ids up to 40000");
  EXPECT_HAS(m, "vocab_size 30522");

  d = model_copy("negative-id");
  edit_json(d / "tokenizer.json", [](nlohmann::json& j) { j["model"]["vocab"]["zzzextra"] = -1; });
  EXPECT_HAS(load_error(d), "\"model.vocab.zzzextra\" must be a token id");

  d = model_copy("no-cls");
  edit_json(d / "tokenizer.json", [](nlohmann::json& j) { j["model"]["vocab"].erase("[CLS]"); });
  EXPECT_HAS(load_error(d), "special token [CLS]");
}

TEST_F(ModelDirectory, TruncatedOrIncompleteWeights) {
  const fs::path d = model_copy("truncated");
  const fs::path weights = d / "model.fp16.safetensors";
  fs::remove(weights);
  const std::string bytes = read_bytes(kModel / "model.fp16.safetensors");
  write_file(weights, bytes.substr(0, bytes.size() / 2));
  std::string m = load_error(d);
  EXPECT_HAS(m, weights.string());
  EXPECT_HAS(m, "truncated");

  // A valid file without the tensors config.json asks for.
  write_file(weights, std::string("\x02\0\0\0\0\0\0\0{}", 10));
  m = load_error(d);
  EXPECT_HAS(m, "has no tensor 'embeddings.word_embeddings.weight'");
}

TEST_F(ModelDirectory, NonFiniteWeightsAreCaughtAtEncode) {
  const fs::path d = model_copy("nan-weights", /*copy_weights=*/true);
  const fs::path weights = d / "model.fp16.safetensors";
  const SafeTensorsFile st = SafeTensorsFile::open(weights);
  const TensorInfo& bias = st.info("embeddings.LayerNorm.bias");
  std::string bytes = read_bytes(weights);
  std::uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  const std::size_t at = 8 + header + bias.byte_begin;
  bytes[at] = '\x00';
  bytes[at + 1] = '\x7e';  // fp16 NaN
  write_file(weights, bytes);
  const Encoder encoder = Encoder::load(d);
  try {
    (void)encoder.encode({"hello"});
    FAIL() << "encoded with NaN weights";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "non-finite embedding for text #1");
    EXPECT_HAS(e.what(), d.string());
  }
  // Nothing non-finite can reach a store through `embed` either.
  const fs::path db = file("nan.db");
  testing_support::make_trained_demo_store(db, /*small=*/true);
  testing_support::raw_sql(db, "DELETE FROM answer_embeddings");
  const std::string before = dump_of(db);
  expect_refused(run_cli({"embed", "--db", db.string(), "--model", d.string(), "-q"}), {"non-finite"});
  EXPECT_SAME_STORE(db, before);
}

// ------------------------------------------------------------ safetensors headers

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xFF);
  return s;
}

class SafeTensorsHeader : public testing_support::TempDirTest {};

TEST_F(SafeTensorsHeader, LyingOrOddHeaders) {
  const std::string data(8, '\0');
  auto file_with = [&](const std::string& header) { return le64(header.size()) + header + data; };
  auto entry = [&](const std::string& e) { return file_with("{\"t\":" + e + "}"); };
  struct Case {
    const char* name;
    std::string content;
    const char* expect;
  };
  const Case cases[] = {
      {"zero header length", le64(0) + data, "not valid JSON"},
      {"header of NUL bytes", file_with(std::string(4, '\0')), "not valid JSON"},
      {"header that is a string", file_with("\"tensors\""), "must be a JSON object"},
      {"fractional offset", entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8.5]})"), "non-negative integer"},
      {"offset as text", entry(R"({"dtype":"F32","shape":[2],"data_offsets":["0",8]})"), "non-negative integer"},
      {"three offsets", entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4,8]})"), "[begin, end]"},
      {"fractional shape", entry(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,8]})"), "non-negative integer"},
      {"shape of objects", entry(R"({"dtype":"F32","shape":[{}],"data_offsets":[0,8]})"), "non-negative integer"},
      {"dtype not a string", entry(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"), "dtype"},
      {"tensor not an object", entry("[1,2]"), "must be a JSON object"},
      {"huge offsets", entry(R"({"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]})"),
       "past the data section"},
      {"length field past the file", le64(~0ull) + "{}", "header length"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path path = write_file(file("t.safetensors"), c.content);
    const std::string m = input_error([&] { (void)SafeTensorsFile::open(path); });
    EXPECT_HAS(m, path.string());
    EXPECT_HAS(m, c.expect);
  }
}

// ------------------------------------------------------------ the database file

TEST_F(InputMatrix, DatabaseFromANewerSchemaIsLeftAlone) {
  const fs::path db = copy_db("small.db", file("future.db"));
  testing_support::raw_sql(db, "PRAGMA user_version = " + std::to_string(kSchemaVersion + 1));
  const std::string bytes = read_bytes(db);
  const std::string data = testing_support::demo_file("extra.jsonl").string();
  const std::vector<std::vector<std::string>> commands = {
      {"import", "--db", db.string(), data},
      {"embed", "--db", db.string(), "-q"},
      {"train", "--db", db.string()},
      {"query", "--db", db.string(), "hello"},
      {"validate", "--db", db.string(), "--test", testing_support::demo_file("extra_heldout.jsonl").string()},
      {"stats", "--db", db.string()},
  };
  for (const auto& command : commands) {
    SCOPED_TRACE(command[0]);
    expect_refused(run_cli(command), {"database " + db.string() + " has schema version " +
                                          std::to_string(kSchemaVersion + 1),
                                      "upgrade ldaproj"});
    EXPECT_EQ(read_bytes(db), bytes);
    EXPECT_FALSE(fs::exists(db.string() + "-wal"));
  }
}

TEST_F(InputMatrix, CommandsThatNeedADatabaseDoNotCreateOne) {
  for (const char* command : {"embed", "train", "stats"}) {
    const fs::path db = file(std::string("typo-") + command + ".db");
    expect_refused(run_cli({command, "--db", db.string()}), {db.string(), "does not exist", "ldaproj import"});
    EXPECT_FALSE(fs::exists(db)) << command;
  }
}

// Root may write anything, so the read-only cases run the CLI as nobody then.
CliOptions as_unprivileged() {
  CliOptions options;
  if (geteuid() == 0) options.as_user = kNobody;
  return options;
}

TEST_F(InputMatrix, ReadOnlyDatabaseFileOrDirectory) {
  fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
  const std::string data = testing_support::demo_file("clusters.json").string();
  struct Layout {
    const char* name;
    fs::perms dir_perms;
    fs::perms file_perms;
    const char* reason;
  };
  const fs::perms read_exec = fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                              fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec;
  const fs::perms read = fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read;
  const Layout layouts[] = {
      {"read-only file", fs::perms::all, read, "no write permission on the file"},
      {"read-only directory", read_exec, read | fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
       "no write permission on its directory"},
  };
  for (const Layout& layout : layouts) {
    SCOPED_TRACE(layout.name);
    const fs::path sub = file(layout.name);
    fs::create_directories(sub);
    const fs::path db = copy_db("small.db", sub / "ro.db");
    const std::string before = dump_of(db);
    fs::permissions(db, layout.file_perms);
    fs::permissions(sub, layout.dir_perms);
    const CliOptions options = as_unprivileged();
    for (const auto& command : std::vector<std::vector<std::string>>{{"import", "--db", db.string(), data},
                                                                     {"embed", "--db", db.string(), "-q"},
                                                                     {"train", "--db", db.string(), "--name", "x"}}) {
      SCOPED_TRACE(command[0]);
      expect_refused(run_cli(command, options),
                     {"database " + db.string() + " is read-only for this user", layout.reason, "chmod"});
    }
    // Reading needs no write access.
    const CliResult stats = run_cli({"stats", "--db", db.string(), "--json"}, options);
    ASSERT_EQ(stats.code, 0) << stats.out;
    EXPECT_EQ(nlohmann::json::parse(stats.out)["clusters"], 2);
    const CliResult query = run_cli({"query", "--db", db.string(), "--json", "print my photos"}, options);
    EXPECT_EQ(query.code, 0) << query.out;
    fs::permissions(sub, fs::perms::all);
    fs::permissions(db, fs::perms::owner_read | fs::perms::owner_write);
    EXPECT_SAME_STORE(db, before);
  }
  // A new database in a directory nobody may write.
  const fs::path locked = file("locked");
  fs::create_directories(locked);
  fs::permissions(locked, read_exec);
  expect_refused(run_cli({"import", "--db", (locked / "new.db").string(), data}, as_unprivileged()),
                 {"cannot create database " + (locked / "new.db").string(), "no write permission"});
  EXPECT_FALSE(fs::exists(locked / "new.db"));
  fs::permissions(locked, fs::perms::all);
}

// A full disk, as the process sees it: writes past RLIMIT_FSIZE fail (EFBIG)
// as they would on a full file system (ENOSPC); both end in the same SQLite
// error paths.
class FullDisk : public InputMatrix {
 protected:
  static CliOptions limited(rlim_t bytes) {
    CliOptions options;
    options.file_size_limit = bytes;
    return options;
  }
};

TEST_F(FullDisk, ImportEmbedAndTrainFailCleanlyAndRecover) {
  const fs::path db = copy_db("demo.db", file("full.db"));
  const std::string data = testing_support::demo_file("clusters.json").string();
  // Each write below needs far more than 48 KiB of write-ahead log.
  constexpr rlim_t kLimit = 48 * 1024;
  const std::vector<std::string> advice = {"SQLite", db.string(), "full", "file-size limit", "changed nothing"};

  // Import: the demo file with its clusters renamed is a new batch of ~340 rows
  // (an unchanged copy would add nothing: imports are keyed by content).
  std::string renamed = read_bytes(data);
  for (std::size_t at = renamed.find("\"id\": \""); at != std::string::npos; at = renamed.find("\"id\": \"", at + 1)) {
    renamed.insert(at + 7, "copy_");
  }
  const fs::path copy = write_file(file("clusters.json"), renamed);
  std::string before = dump_of(db);
  expect_refused(run_cli({"import", "--db", db.string(), copy.string()}, limited(kLimit)), advice);
  EXPECT_SAME_STORE(db, before);
  EXPECT_EQ(testing_support::raw_sql(db, "PRAGMA integrity_check"), "ok\n");
  ASSERT_EQ(run_cli({"import", "--db", db.string(), copy.string()}).code, 0);

  // Embed: the first batch cannot be committed.
  testing_support::raw_sql(db, "DELETE FROM question_embeddings");
  before = dump_of(db);
  if (fs::exists(kModel / "config.json")) {
    expect_refused(run_cli({"embed", "--db", db.string(), "-q"}, limited(kLimit)), advice);
    EXPECT_SAME_STORE(db, before);
  }

  // Train: the new projection does not fit; the old one stays active.
  {
    Store store = Store::open(db);
    testing_support::embed_randomly(store, 9);
  }
  before = dump_of(db);
  expect_refused(run_cli({"train", "--db", db.string(), "--name", "retrained"}, limited(kLimit)), advice);
  EXPECT_SAME_STORE(db, before);
  EXPECT_EQ(testing_support::raw_sql(db, "PRAGMA integrity_check"), "ok\n");
  const CliResult retrained = run_cli({"train", "--db", db.string(), "--name", "retrained"});
  EXPECT_EQ(retrained.code, 0) << retrained.out;
}

// The same on a real, full file system when this process may mount one.
TEST_F(FullDisk, RealFullFileSystem) {
  const fs::path mount_point = file("small-fs");
  fs::create_directories(mount_point);
  if (::mount("ldaproj-test", mount_point.c_str(), "tmpfs", 0, "size=1m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (needs CAP_SYS_ADMIN); the RLIMIT_FSIZE test covers the same paths";
  }
  struct Unmount {
    fs::path at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{mount_point};
  const fs::path db = copy_db("small.db", mount_point / "full.db");
  // Fill what is left, leaving too little for the import's write-ahead log.
  {
    std::ofstream filler(mount_point / "filler", std::ios::binary);
    const std::string block(4096, 'x');
    while (filler.write(block.data(), block.size())) {
    }
  }
  fs::resize_file(mount_point / "filler", fs::file_size(mount_point / "filler") - 64 * 1024);
  const std::string before = dump_of(db);
  const std::string data = testing_support::demo_file("clusters.json").string();
  expect_refused(run_cli({"import", "--db", db.string(), data}), {db.string(), "full"});
  EXPECT_SAME_STORE(db, before);
  fs::remove(mount_point / "filler");
  const CliResult again = run_cli({"import", "--db", db.string(), data});
  EXPECT_EQ(again.code, 0) << again.out;
}

}  // namespace
}  // namespace ldaproj
