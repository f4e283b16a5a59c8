// Tests for the importers: both formats land every field where it belongs,
// re-imports are idempotent or replace their batch, and every kind of bad
// input is refused with a message naming file, record and field while the
// database stays exactly as it was.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ldaproj/error.hpp"
#include "temp_dir_test_base.hpp"
#include "ldaproj/importer.hpp"
#include "ldaproj/store.hpp"
#include "store/dump.hpp"

namespace fs = std::filesystem;
using namespace ldaproj;

namespace {

const fs::path kFixtures = fs::path(LDAPROJ_SOURCE_DIR) / "tests" / "data" / "import";

class ImporterTest : public ldaproj::testing_support::TempDirTest {
 protected:
  fs::path write(const std::string& name, const std::string& content) const {
    return write_file(file(name), content);
  }

  fs::path copy_fixture(const std::string& name) const {
    const fs::path target = file(name);
    fs::copy_file(kFixtures / name, target, fs::copy_options::overwrite_existing);
    return target;
  }
};

// Questions/answers of one cluster, by external id, as (kind, text) pairs.
struct ClusterView {
  std::string name, description;
  std::multiset<std::pair<std::string, std::string>> questions;  // (length_type, text)
  std::multiset<std::pair<std::string, std::string>> answers;    // (variant, text)
};

std::map<std::string, ClusterView> view_of(const Store& store) {
  std::map<std::int64_t, std::string> external;
  std::map<std::string, ClusterView> view;
  for (const Cluster& c : store.clusters()) {
    external[c.id] = c.external_id;
    view[c.external_id].name = c.name;
    view[c.external_id].description = c.description;
  }
  for (const Question& q : store.questions()) view.at(external.at(q.cluster_id)).questions.emplace(q.length_type, q.text);
  for (const Answer& a : store.answers()) view.at(external.at(a.cluster_id)).answers.emplace(a.variant, a.text);
  return view;
}

using Pairs = std::multiset<std::pair<std::string, std::string>>;

}  // namespace

TEST_F(ImporterTest, OriginalFormatLandsEveryField) {
  Store store = Store::open(file("db.sqlite"));
  const fs::path data = copy_fixture("original.json");
  const ImportReport report = import_file(store, data);
  EXPECT_EQ(report.outcome, ImportOutcome::Imported);
  EXPECT_EQ(report.file, fs::absolute(data).lexically_normal().string());
  EXPECT_EQ(report.clusters, 2);
  EXPECT_EQ(report.questions, 7);
  EXPECT_EQ(report.answers, 3);
  EXPECT_EQ(report.held_out, 1);             // "novel" is held-out test data
  EXPECT_EQ(report.duplicate_questions, 1);  // "load csv" is both short and medium: kept once, as short
  EXPECT_EQ(report.sha256.size(), 64u);

  const auto view = view_of(store);
  ASSERT_EQ(view.size(), 2u);
  const ClusterView& csv = view.at("csv_data_source");
  EXPECT_EQ(csv.name, "CSV data source");
  EXPECT_EQ(csv.description, "Reading tabular data from CSV files");
  EXPECT_EQ(csv.questions,
            (Pairs{{"short", "load csv"},
                   {"short", "csv import"},
                   {"medium", "how do I read a CSV file into the table?"},
                   {"long",
                    "I have a spreadsheet exported as comma separated values and want to load it, what should I use?"},
                   {"medium", "bring comma-separated data in"}}));
  EXPECT_EQ(csv.answers,
            (Pairs{{"default", "Use the CSV data source: point it at the file and map the columns."},
                   {"all-MiniLM-L6-v2", "CSV source: set the path, then map each column to a field."}}));
  const ClusterView& unicode = view.at("unicode_cluster");
  EXPECT_EQ(unicode.name, "");
  EXPECT_EQ(unicode.questions, (Pairs{{"short", "café crème"}, {"short", "naïve façade"}}));
  EXPECT_EQ(unicode.answers, (Pairs{{"default", "Réponse: « ça marche » — 日本語 ✓"}}));

  // Questions keep the file's order within the file.
  const auto questions = store.questions();
  ASSERT_EQ(questions.size(), 7u);
  EXPECT_EQ(questions[0].text, "load csv");
  EXPECT_EQ(questions[1].text, "csv import");
  for (const Question& q : questions) EXPECT_EQ(q.text.find("held-out"), std::string::npos);

  const auto batches = store.batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].file, report.file);
  EXPECT_EQ(batches[0].sha256, report.sha256);
  EXPECT_EQ(batches[0].status, "imported");
  EXPECT_EQ(batches[0].imported_at.size(), 20u);
}

TEST_F(ImporterTest, JsonLinesLandsEveryField) {
  Store store = Store::open(file("db.sqlite"));
  const ImportReport report = import_file(store, copy_fixture("records.jsonl"));
  EXPECT_EQ(report.outcome, ImportOutcome::Imported);
  EXPECT_EQ(report.clusters, 2);
  EXPECT_EQ(report.questions, 4);
  EXPECT_EQ(report.answers, 3);
  const auto view = view_of(store);
  ASSERT_EQ(view.size(), 2u);
  const ClusterView& reset = view.at("reset_password");
  EXPECT_EQ(reset.name, "Password reset");
  EXPECT_EQ(reset.description, "Recovering account access");
  EXPECT_EQ(reset.questions, (Pairs{{"short", "forgot my password"},
                                    {"medium", "how can I get back into my account without the password?"}}));
  EXPECT_EQ(reset.answers, (Pairs{{"default", "Open the sign-in page and choose 'Forgot password'."},
                                  {"all-MiniLM-L6-v2", "Use 'Forgot password' on the sign-in page."}}));
  const ClusterView& billing = view.at("billing");
  EXPECT_EQ(billing.name, "");
  EXPECT_EQ(billing.questions, (Pairs{{"", "why was I charged twice"}, {"", "refund a duplicate payment"}}));
  EXPECT_EQ(billing.answers, (Pairs{{"default", "Duplicate charges are refunded within five days."}}));
}

TEST_F(ImporterTest, HashIsTheFilesSha256) {
  Store store = Store::open(file("db.sqlite"));
  // sha256 of these exact bytes, computed independently with sha256sum.
  const fs::path data = write("one.jsonl", "{\"cluster\":\"x\",\"question\":\"q\"}\n");
  EXPECT_EQ(import_file(store, data).sha256, "5bd4cb4f7e6c11ebe8b86a3f756f01165c3dbb802161d56e9458b11230251b94");
}

TEST_F(ImporterTest, ByteOrderMarkAndBlankLinesAreAccepted) {
  Store store = Store::open(file("db.sqlite"));
  import_file(store, write("bom.jsonl", "\xEF\xBB\xBF{\"cluster\":\"x\",\"question\":\"q\"}\n\n  \n"
                                        "{\"cluster\":\"x\",\"answer\":\"a\"}"));
  import_file(store, write("bom.json", "\xEF\xBB\xBF{\"clusters\":[{\"id\":\"y\",\"answers\":{\"default\":\"a\"},"
                                       "\"queries\":{\"short\":[\"q\"]}}]}"));
  const auto view = view_of(store);
  EXPECT_EQ(view.size(), 2u);
  EXPECT_EQ(view.at("x").questions, (Pairs{{"", "q"}}));
  EXPECT_EQ(view.at("y").answers, (Pairs{{"default", "a"}}));
}

TEST_F(ImporterTest, UnchangedFileIsANoOp) {
  Store store = Store::open(file("db.sqlite"));
  const fs::path data = copy_fixture("original.json");
  const ImportReport first = import_file(store, data);
  const std::string before = store_detail::logical_dump(store);
  const ImportReport second = import_file(store, data);
  EXPECT_EQ(second.outcome, ImportOutcome::Unchanged);
  EXPECT_EQ(second.sha256, first.sha256);
  EXPECT_EQ(second.questions, first.questions);
  EXPECT_EQ(store_detail::logical_dump(store), before);
  // The same file named through another spelling of its path is the same batch.
  const fs::path spelled = dir_ / "." / "sub" / ".." / "original.json";
  fs::create_directories(dir_ / "sub");
  EXPECT_EQ(import_file(store, spelled).outcome, ImportOutcome::Unchanged);
  EXPECT_EQ(store_detail::logical_dump(store), before);
}

TEST_F(ImporterTest, ChangedFileReplacesItsBatch) {
  Store store = Store::open(file("db.sqlite"));
  const std::string v1 =
      "{\"cluster\":\"keep\",\"question\":\"same question\",\"length\":\"short\"}\n"
      "{\"cluster\":\"keep\",\"question\":\"old wording\"}\n"
      "{\"cluster\":\"keep\",\"answer\":\"keep answer\"}\n"
      "{\"cluster\":\"gone\",\"question\":\"gone question\"}\n"
      "{\"cluster\":\"gone\",\"answer\":\"gone answer\"}\n";
  const fs::path data = write("data.jsonl", v1);
  const ImportReport first = import_file(store, data);

  // Embed everything so we can see which rows survive.
  const std::int64_t model = store.ensure_model("mini", 2);
  for (const EntityKind kind : {EntityKind::Question, EntityKind::Answer}) {
    const auto pending = store.missing_embeddings(model, kind);
    std::vector<std::int64_t> ids;
    Matrix vectors(pending.size(), 2);
    for (std::size_t i = 0; i < pending.size(); ++i) {
      ids.push_back(pending[i].id);
      vectors(i, 0) = static_cast<float>(pending[i].id);
    }
    store.put_embeddings(model, kind, ids, vectors);
  }
  std::int64_t same_id = 0;
  for (const Question& q : store.questions()) {
    if (q.text == "same question") same_id = q.id;
  }

  const std::string v2 =
      "{\"cluster\":\"keep\",\"question\":\"same question\",\"length\":\"short\"}\n"
      "{\"cluster\":\"keep\",\"question\":\"new wording\"}\n"
      "{\"cluster\":\"keep\",\"answer\":\"keep answer\"}\n"
      "{\"cluster\":\"added\",\"question\":\"added question\"}\n"
      "{\"cluster\":\"added\",\"answer\":\"added answer\"}\n";
  write("data.jsonl", v2);
  const ImportReport second = import_file(store, data);
  EXPECT_EQ(second.outcome, ImportOutcome::Updated);
  EXPECT_NE(second.sha256, first.sha256);

  const auto view = view_of(store);
  EXPECT_EQ(view.count("gone"), 0u);
  ASSERT_EQ(view.count("added"), 1u);
  EXPECT_EQ(view.at("keep").questions, (Pairs{{"short", "same question"}, {"", "new wording"}}));
  EXPECT_EQ(store.questions().size(), 3u);
  EXPECT_EQ(store.answers().size(), 2u);
  const auto batches = store.batches();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].sha256, second.sha256);

  // The unchanged question kept its id and embedding; removed rows took their
  // embeddings with them; new rows wait for `embed`.
  const EmbeddingSet questions = store.embeddings(model, EntityKind::Question);
  ASSERT_EQ(questions.ids.size(), 1u);
  EXPECT_EQ(questions.ids[0], same_id);
  EXPECT_EQ(questions.vectors(0, 0), static_cast<float>(same_id));
  EXPECT_EQ(store.missing_embeddings(model, EntityKind::Question).size(), 2u);
  EXPECT_EQ(store.embeddings(model, EntityKind::Answer).ids.size(), 1u);

  // Back to v1: old wording returns, "added" disappears.
  write("data.jsonl", v1);
  EXPECT_EQ(import_file(store, data).outcome, ImportOutcome::Updated);
  const auto back = view_of(store);
  EXPECT_EQ(back.count("added"), 0u);
  EXPECT_EQ(back.count("gone"), 1u);
  EXPECT_EQ(back.at("keep").questions, (Pairs{{"short", "same question"}, {"", "old wording"}}));
}

TEST_F(ImporterTest, ClustersAreSharedAcrossFiles) {
  Store store = Store::open(file("db.sqlite"));
  const fs::path questions = write("questions.jsonl", "{\"cluster\":\"x\",\"question\":\"q1\"}\n");
  const fs::path answers = write("answers.jsonl", "{\"cluster\":\"x\",\"answer\":\"a1\"}\n");
  const fs::path names = write("names.jsonl", "{\"cluster\":\"x\",\"name\":\"Cluster X\",\"description\":\"d\"}\n");
  import_file(store, questions);
  import_file(store, answers);
  import_file(store, names);
  auto view = view_of(store);
  ASSERT_EQ(view.size(), 1u);
  EXPECT_EQ(view.at("x").name, "Cluster X");
  EXPECT_EQ(view.at("x").questions, (Pairs{{"", "q1"}}));
  EXPECT_EQ(view.at("x").answers, (Pairs{{"default", "a1"}}));
  EXPECT_EQ(store.batches().size(), 3u);

  // Emptying one file keeps the cluster while another file still feeds it.
  write("questions.jsonl", "{\"cluster\":\"y\",\"question\":\"q2\"}\n{\"cluster\":\"y\",\"answer\":\"a2\"}\n");
  EXPECT_EQ(import_file(store, questions).outcome, ImportOutcome::Updated);
  view = view_of(store);
  ASSERT_EQ(view.count("x"), 1u);
  EXPECT_TRUE(view.at("x").questions.empty());
  EXPECT_EQ(view.at("x").name, "Cluster X");

  // The same content from another path adds nothing.
  fs::copy_file(answers, file("answers-copy.jsonl"));
  const ImportReport copy = import_file(store, file("answers-copy.jsonl"));
  EXPECT_EQ(copy.outcome, ImportOutcome::AlreadyImported);
  EXPECT_EQ(copy.same_as, fs::absolute(answers).lexically_normal().string());
  EXPECT_EQ(view_of(store).at("x").answers, (Pairs{{"default", "a1"}}));
  EXPECT_EQ(store.batches().size(), 3u);
}

TEST_F(ImporterTest, ReimportUnderAnotherPathChangesNoRow) {
  Store store = Store::open(file("db.sqlite"));
  const fs::path data = copy_fixture("original.json");
  import_file(store, copy_fixture("records.jsonl"));
  import_file(store, data);
  const std::string before = store_detail::logical_dump(store);
  fs::create_directories(dir_ / "elsewhere");
  const fs::path copy = dir_ / "elsewhere" / "renamed.json";
  fs::copy_file(data, copy);
  const ImportReport report = import_file(store, copy);
  EXPECT_EQ(report.outcome, ImportOutcome::AlreadyImported);
  EXPECT_EQ(report.same_as, fs::absolute(data).lexically_normal().string());
  EXPECT_EQ(store_detail::logical_dump(store), before);
  EXPECT_EQ(store.batches().size(), 2u);
}

TEST_F(ImporterTest, IdenticalQuestionsCountOnceWithinAndAcrossFiles) {
  Store store = Store::open(file("db.sqlite"));
  const fs::path a = write("a.jsonl",
                           "{\"cluster\":\"x\",\"question\":\"q1\",\"length\":\"short\"}\n"
                           "{\"cluster\":\"x\",\"question\":\"q2\"}\n"
                           "{\"cluster\":\"x\",\"question\":\"q1\",\"length\":\"long\"}\n"
                           "{\"cluster\":\"x\",\"answer\":\"the answer\"}\n"
                           "{\"cluster\":\"y\",\"question\":\"q1\"}\n"
                           "{\"cluster\":\"y\",\"answer\":\"y answer\"}\n");
  const ImportReport first = import_file(store, a);
  EXPECT_EQ(first.questions, 3);  // q1 twice in x counts once; q1 in y is another cluster's
  EXPECT_EQ(first.duplicate_questions, 1);
  const fs::path b = write("b.json",
                           R"({"clusters":[{"id":"x","answers":{"default":"the answer"},)"
                           R"("queries":{"short":["q2","q3"],"medium":["q3"]}}]})");
  const ImportReport second = import_file(store, b);
  EXPECT_EQ(second.outcome, ImportOutcome::Imported);
  EXPECT_EQ(second.duplicate_questions, 2);  // q3 within b, q2 already in x from a
  EXPECT_EQ(second.duplicate_answers, 1);
  EXPECT_EQ(second.rows_added, 1);
  auto view = view_of(store);
  EXPECT_EQ(view.at("x").questions, (Pairs{{"short", "q1"}, {"", "q2"}, {"short", "q3"}}));
  EXPECT_EQ(view.at("x").answers, (Pairs{{"default", "the answer"}}));
  EXPECT_EQ(view.at("y").questions, (Pairs{{"", "q1"}}));

  // a drops q2 and its answer, which b still has: re-importing b (unchanged)
  // stores them again, under b.
  write("a.jsonl", "{\"cluster\":\"x\",\"question\":\"q1\",\"length\":\"short\"}\n"
                   "{\"cluster\":\"y\",\"question\":\"q1\"}\n{\"cluster\":\"y\",\"answer\":\"y answer\"}\n");
  EXPECT_EQ(import_file(store, a).outcome, ImportOutcome::Updated);
  EXPECT_EQ(view_of(store).at("x").questions, (Pairs{{"short", "q1"}, {"short", "q3"}}));
  const ImportReport restored = import_file(store, b);
  EXPECT_EQ(restored.outcome, ImportOutcome::Updated);
  EXPECT_EQ(restored.rows_added, 2);
  view = view_of(store);
  EXPECT_EQ(view.at("x").questions, (Pairs{{"short", "q1"}, {"short", "q2"}, {"short", "q3"}}));
  EXPECT_EQ(view.at("x").answers, (Pairs{{"default", "the answer"}}));
  // And now it is a no-op.
  const std::string before = store_detail::logical_dump(store);
  EXPECT_EQ(import_file(store, b).outcome, ImportOutcome::Unchanged);
  EXPECT_EQ(store_detail::logical_dump(store), before);
}

TEST_F(ImporterTest, ConflictingAnswersAcrossFilesAreRefusedNamingBothFiles) {
  Store store = Store::open(file("db.sqlite"));
  const fs::path a = write("a.jsonl", "{\"cluster\":\"x\",\"question\":\"q\"}\n{\"cluster\":\"x\",\"answer\":\"one\"}\n");
  import_file(store, a);
  const std::string a_path = fs::absolute(a).lexically_normal().string();
  const std::string before = store_detail::logical_dump(store);
  const fs::path b = write("b.jsonl", "{\"cluster\":\"x\",\"question\":\"q2\"}\n{\"cluster\":\"x\",\"answer\":\"two\"}\n");
  const fs::path c = write("c.json", R"({"clusters":[{"id":"x","answers":{"default":"three"},"queries":{"short":["q"]}}]})");
  for (const auto& [path, where] : {std::pair{b, std::string("line 2 (cluster \"x\"): field \"answer\"")},
                                    std::pair{c, std::string("cluster #1 (\"x\"): field \"answers.default\"")}}) {
    SCOPED_TRACE(path.string());
    try {
      import_file(store, path);
      ADD_FAILURE() << "expected InputError";
    } catch (const InputError& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.rfind(path.string() + ": " + where, 0), 0u) << message;
      EXPECT_NE(message.find("already has a different \"default\" answer, from " + a_path), std::string::npos)
          << message;
    }
    EXPECT_EQ(store_detail::logical_dump(store), before);
  }
  // Another variant is no conflict, and the file that gave the answer may change it.
  write("b.jsonl", "{\"cluster\":\"x\",\"answer\":\"two\",\"variant\":\"other-model\"}\n");
  EXPECT_EQ(import_file(store, b).outcome, ImportOutcome::Imported);
  write("a.jsonl", "{\"cluster\":\"x\",\"question\":\"q\"}\n{\"cluster\":\"x\",\"answer\":\"one, edited\"}\n");
  EXPECT_EQ(import_file(store, a).outcome, ImportOutcome::Updated);
  EXPECT_EQ(view_of(store).at("x").answers, (Pairs{{"default", "one, edited"}, {"other-model", "two"}}));
}

TEST_F(ImporterTest, DeeplyNestedJsonIsRefusedNotCrashed) {
  Store store = Store::open(file("db.sqlite"));
  const fs::path data = write("deep.json", std::string(20000, '[') + std::string(20000, ']'));
  EXPECT_THROW(import_file(store, data), InputError);
}

TEST_F(ImporterTest, MissingFileIsAnInputError) {
  Store store = Store::open(file("db.sqlite"));
  try {
    import_file(store, file("nope.json"));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("nope.json"), std::string::npos) << e.what();
  }
  EXPECT_THROW(import_file(store, dir_), InputError);
}

namespace {

struct BadInput {
  const char* name;
  const char* file_name;
  std::string content;
  std::vector<std::string> expected;  // substrings of the message besides the file name
};

std::vector<BadInput> bad_inputs() {
  const std::string ok_cluster =
      R"({"id":"ok","answers":{"default":"fine"},"queries":{"short":["fine question"]}})";
  return {
      {"not_json", "a.json", "hello world\n", {"line 1, column 1", "invalid JSON"}},
      // Found by fuzz_serve_request (the same nlohmann exception): a number
      // beyond a double is out_of_range, not a parse error.
      {"number_overflow_jsonl", "a.jsonl",
       "{\"cluster\":\"a\",\"question\":\"q\"}\n{\"cluster\":\"a\",\"answer\":\"x\",\"n\":1e999}\n",
       {"line 2, column 33", "the number 1e999 is out of range"}},
      {"number_overflow_original", "a.json",
       "{\"clusters\":[\n{\"id\":\"a\",\"x\":-1E400,\"answers\":{\"default\":\"A\"},\"queries\":{\"short\":[\"q\"]}}]}",
       {"line 2, column 15", "the number -1E400 is out of range"}},
      {"truncated_original", "a.json",
       "{\"clusters\":[\n  {\"id\":\"a\",\"answers\":{\"default\":\"x\"},\n   \"queries\":{\"short\":[\"q1\"",
       {"line 3, column", "invalid JSON", "truncated"}},
      {"original_with_trailing_junk", "a.json", "{\"clusters\":[" + ok_cluster + "]}\n{\"more\":1}\n",
       {"line 2, column 1", "invalid JSON"}},
      {"top_level_array", "a.json", "[1,2,3]", {"got array"}},
      {"object_without_clusters", "a.json", "{\"items\":[]}", {"\"clusters\"", "neither"}},
      {"empty_file", "a.json", "  \n\n", {"empty"}},
      {"clusters_not_array", "a.json", "{\"clusters\":{\"id\":\"a\"}}",
       {"field \"clusters\": expected an array, got object"}},
      {"cluster_not_object", "a.json", "{\"clusters\":[" + ok_cluster + ",\"text\"]}",
       {"cluster #2: expected an object, got string"}},
      {"missing_id", "a.json", R"({"clusters":[{"answers":{"default":"x"},"queries":{"short":["q"]}}]})",
       {"cluster #1", "field \"id\": missing"}},
      {"id_not_string", "a.json", R"({"clusters":[{"id":7,"answers":{"default":"x"},"queries":{"short":["q"]}}]})",
       {"cluster #1", "field \"id\": expected a string, got number"}},
      {"queries_short_is_text", "a.json",
       "{\"clusters\":[" + ok_cluster +
           R"(,{"id":"foo","answers":{"default":"x"},"queries":{"short":"text"}}]})",
       {"cluster #2 (\"foo\")", "field \"queries.short\": expected an array of strings, got string"}},
      {"question_is_number", "a.json",
       "{\"clusters\":[" + ok_cluster + "," + ok_cluster.substr(0, 7) + "2" + ok_cluster.substr(7) +
           R"(,{"id":"foo","answers":{"default":"x"},"queries":{"short":["a","b",3]}}]})",
       {"cluster #3 (\"foo\"): field \"queries.short[2]\": expected a string, got number"}},
      {"duplicate_cluster_id", "a.json", "{\"clusters\":[" + ok_cluster + "," + ok_cluster + "]}",
       {"cluster #2 (\"ok\")", "duplicate cluster id", "cluster #1"}},
      {"empty_question", "a.json",
       R"({"clusters":[{"id":"e","answers":{"default":"x"},"queries":{"short":["q"],"long":["  "]}}]})",
       {"cluster #1 (\"e\")", "field \"queries.long[0]\": is empty"}},
      {"empty_answer", "a.json", R"({"clusters":[{"id":"e","answers":{"default":""},"queries":{"short":["q"]}}]})",
       {"cluster #1 (\"e\")", "field \"answers.default\": is empty"}},
      {"answers_not_object", "a.json", R"({"clusters":[{"id":"e","answers":"x","queries":{"short":["q"]}}]})",
       {"cluster #1 (\"e\")", "field \"answers\": expected an object"}},
      {"only_novel_questions", "a.json",
       R"({"clusters":[{"id":"n","answers":{"default":"x"},"queries":{"novel":["held out"]}}]})",
       {"cluster #1 (\"n\")", "no questions"}},
      {"no_answer", "a.json", R"({"clusters":[{"id":"n","queries":{"short":["q"]}}]})",
       {"cluster #1 (\"n\")", "no answer", "\"answers\""}},
      {"invalid_utf8", "a.json", "{\"clusters\":[{\"id\":\"bad\xff\"}]}", {"byte 23", "line 1", "invalid UTF-8"}},
      {"overlong_utf8", "a.jsonl", "{\"cluster\":\"x\",\"question\":\"\xC0\xAF\"}", {"byte 27", "invalid UTF-8"}},
      {"jsonl_bad_line", "a.jsonl",
       "{\"cluster\":\"x\",\"question\":\"q\"}\n{\"cluster\":\"x\",\"answer\":\"a\"}\n{\"cluster\":\"x\",\"question\":}\n",
       {"line 3, column 27", "invalid JSON"}},
      {"jsonl_question_number", "a.jsonl", "{\"cluster\":\"x\",\"answer\":\"a\"}\n{\"cluster\":\"x\",\"question\":5}\n",
       {"line 2 (cluster \"x\")", "field \"question\": expected a string, got number"}},
      {"jsonl_missing_cluster", "a.jsonl", "{\"cluster\":\"x\",\"answer\":\"a\"}\n{\"question\":\"q\"}\n",
       {"line 2", "field \"cluster\": missing"}},
      {"jsonl_cluster_not_string", "a.jsonl", "{\"cluster\":[1],\"question\":\"q\"}\n",
       {"line 1", "field \"cluster\": expected a string, got array"}},
      {"jsonl_empty_answer", "a.jsonl", "{\"cluster\":\"x\",\"question\":\"q\"}\n{\"cluster\":\"x\",\"answer\":\" \"}\n",
       {"line 2 (cluster \"x\")", "field \"answer\": is empty"}},
      {"jsonl_question_and_answer", "a.jsonl", "{\"cluster\":\"x\",\"question\":\"q\",\"answer\":\"a\"}\n",
       {"line 1 (cluster \"x\")", "either \"question\" or \"answer\""}},
      {"jsonl_duplicate_variant", "a.jsonl",
       "{\"cluster\":\"x\",\"answer\":\"a\"}\n{\"cluster\":\"x\",\"question\":\"q\"}\n{\"cluster\":\"x\",\"answer\":\"b\"}\n",
       {"line 3 (cluster \"x\")", "field \"variant\"", "at line 1"}},
      {"jsonl_record_is_array", "a.jsonl", "{\"cluster\":\"x\",\"answer\":\"a\"}\n[1]\n",
       {"line 2", "expected a JSON object, got array"}},
      {"jsonl_record_without_content", "a.jsonl", "{\"cluster\":\"x\",\"answer\":\"a\"}\n{\"cluster\":\"x\"}\n",
       {"line 2 (cluster \"x\")", "none of \"question\""}},
      {"jsonl_unknown_length", "a.jsonl", "{\"cluster\":\"x\",\"answer\":\"a\"}\n{\"cluster\":\"x\",\"question\":\"q\",\"length\":\"tiny\"}\n",
       {"line 2 (cluster \"x\")", "field \"length\": unknown length \"tiny\"", "short, medium or long"}},
      {"original_unknown_group", "a.json",
       R"({"clusters":[{"id":"e","answers":{"default":"x"},"queries":{"short":["q"],"paraphrase":["p"]}}]})",
       {"cluster #1 (\"e\")", "field \"queries.paraphrase\": unknown query group"}},
      {"jsonl_only_novel", "a.jsonl", "{\"cluster\":\"n\",\"question\":\"held out\",\"length\":\"novel\"}\n",
       {"line 1 (cluster \"n\")", "no questions or answers", "\"novel\" questions are held out"}},
      {"jsonl_duplicate_key", "a.jsonl",
       "{\"cluster\":\"x\",\"answer\":\"a\"}\n{\"cluster\":\"x\",\"question\":\"q\",  \"question\":\"r\"}\n",
       {"line 2, column 33", "\"question\" appears twice"}},
      {"original_duplicate_key", "a.json",
       "{\"clusters\":[{\"id\":\"e\",\n  \"answers\":{\"default\":\"x\", \"default\":\"y\"},\"queries\":{\"short\":[\"q\"]}}]}",
       {"line 2, column 29", "\"default\" appears twice"}},
      {"jsonl_length_not_string", "a.jsonl", "{\"cluster\":\"x\",\"question\":\"q\",\"length\":3}\n",
       {"line 1 (cluster \"x\")", "field \"length\": expected a string, got number"}},
      {"jsonl_conflicting_names", "a.jsonl",
       "{\"cluster\":\"x\",\"name\":\"One\"}\n{\"cluster\":\"x\",\"question\":\"q\",\"name\":\"Two\"}\n",
       {"line 2 (cluster \"x\")", "field \"name\"", "line 1"}},
      // Caught only inside the write transaction: proves the rollback.
      {"jsonl_names_unknown_cluster", "a.jsonl",
       "{\"cluster\":\"x\",\"question\":\"q\"}\n{\"cluster\":\"ghost\",\"name\":\"Ghost\"}\n",
       {"line 2 (cluster \"ghost\")", "no questions or answers"}},
  };
}

}  // namespace

TEST_F(ImporterTest, BadInputIsRefusedAndChangesNothing) {
  for (const BadInput& bad : bad_inputs()) {
    SCOPED_TRACE(bad.name);
    // Twice: as a new file, and as new content of an already imported file
    // (the update path, which deletes rows before it could fail).
    for (const bool as_update : {false, true}) {
      SCOPED_TRACE(as_update ? "update" : "new file");
      const fs::path db_path = file(std::string(bad.name) + (as_update ? "-update.db" : "-new.db"));
      Store store = Store::open(db_path);
      const fs::path seed = write("seed.jsonl",
                                  "{\"cluster\":\"s\",\"name\":\"Seed\",\"question\":\"seed q\"}\n"
                                  "{\"cluster\":\"s\",\"answer\":\"seed a\"}\n");
      import_file(store, seed);
      const fs::path target = as_update ? seed : file(bad.file_name);
      const std::string before = store_detail::logical_dump(store);
      write(as_update ? "seed.jsonl" : bad.file_name, bad.content);
      try {
        import_file(store, target);
        ADD_FAILURE() << "expected InputError";
      } catch (const InputError& e) {
        const std::string message = e.what();
        EXPECT_EQ(message.rfind(target.string() + ": ", 0), 0u) << message;
        for (const std::string& part : bad.expected) {
          EXPECT_NE(message.find(part), std::string::npos) << "missing \"" << part << "\" in: " << message;
        }
      }
      EXPECT_EQ(store_detail::logical_dump(store), before);
    }
  }
}
