// Models that cannot be mixed or lost (issue 24): fingerprints refuse a
// student from another teacher, `train` keeps earlier projections and
// `projections` manages them, `backup` copies a live WAL store whole, and
// `distill` says when its student is larger than the teacher.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_runner.hpp"
#include "demo_store.hpp"
#include "ldaproj/distill.hpp"
#include "ldaproj/error.hpp"
#include "ldaproj/fingerprint.hpp"
#include "ldaproj/search.hpp"
#include "ldaproj/server.hpp"
#include "ldaproj/store.hpp"
#include "ldaproj/student.hpp"
#include "ldaproj/train.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing_support::CliResult;
using testing_support::read_bytes;
using testing_support::run_cli;

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

// A small, fast student: the demo stores have tens of heads.
const std::vector<std::string> kSmallStudent{"--heads", "4", "--keys-per-head", "2", "--samples", "100",
                                             "--epochs", "1", "--threads", "1"};

CliResult cli(std::vector<std::string> args, const std::vector<std::string>& more = {}) {
  args.insert(args.end(), more.begin(), more.end());
  return run_cli(args);
}

// The JSON object a command printed as its last line (stderr is merged in).
json last_json_line(const std::string& out) {
  const std::size_t at = out.rfind("\n{");
  return json::parse(at == std::string::npos ? out : out.substr(at + 1));
}

class Models : public testing_support::TempDirTest {};

TEST_F(Models, FingerprintsRoundTripAndTellTeachersApart) {
  const fs::path a = file("a.db"), b = file("b.db");
  testing_support::make_trained_demo_store(a, /*small=*/true);
  testing_support::make_trained_demo_store(b);
  const Store sa = Store::open(a), sb = Store::open(b);
  const auto fa = sa.projection_fingerprint(), fb = sb.projection_fingerprint();
  ASSERT_TRUE(fa && fb);
  // Same default name in both stores, which is why names cannot identify a teacher.
  EXPECT_EQ(fa->projection, fb->projection);
  EXPECT_NE(fa->id, fb->id);
  EXPECT_EQ(Fingerprint::from_json(fa->to_json(), "test").id, fa->id);
  const std::string diff = describe_difference(*fa, *fb);
  EXPECT_HAS(diff, std::to_string(fa->heads) + " heads vs " + std::to_string(fb->heads));
  EXPECT_HAS(diff, "another cluster set");
  // The id must be what the fields hash to.
  json edited = json::parse(fa->to_json());
  edited["heads"] = fb->heads;
  EXPECT_THROW(Fingerprint::from_json(edited.dump(), "test"), InputError);
  // Stored with the projection; the same teacher again gives the same fingerprint.
  EXPECT_EQ(sb.load_projection()->fingerprint->id, fb->id);
  EXPECT_EQ(sb.projections().front().fingerprint->id, fb->id);
}

// Projections trained before fingerprints: computed from the stored heads
// when loaded, and kept once a student is stored with them.
TEST_F(Models, ProjectionsWithoutAStoredFingerprintGetOne) {
  const fs::path db = file("old.db");
  testing_support::make_trained_demo_store(db, /*small=*/true);
  const std::string id = Store::open(db).projection_fingerprint()->id;
  testing_support::raw_sql(db, "UPDATE projections SET metrics_json = json_remove(metrics_json, '$.fingerprint')");
  {
    const Store store = Store::open(db);
    EXPECT_FALSE(store.projections().front().fingerprint.has_value());
    EXPECT_EQ(store.load_projection()->fingerprint->id, id);
    EXPECT_EQ(store.projection_fingerprint()->id, id);
  }
  ASSERT_EQ(cli({"distill", "--db", db.string(), "--quiet"}, kSmallStudent).code, 0);
  const Store store = Store::open(db);
  ASSERT_TRUE(store.projections().front().fingerprint.has_value());
  EXPECT_EQ(store.projections().front().fingerprint->id, id);
  EXPECT_EQ(store.load_student()->provenance.teacher, TeacherMatch::Matches);
}

// The bug report: a student distilled from a small store silently replaced
// a larger store's own student, both projections having the default name.
TEST_F(Models, AForeignStudentIsRefusedAndTheStoreIsUnchangedUnlessForced) {
  const fs::path small = file("small.db"), big = file("big.db");
  testing_support::make_trained_demo_store(small, /*small=*/true);
  testing_support::make_trained_demo_store(big);
  for (const fs::path& db : {small, big}) {
    const CliResult r = cli({"distill", "--db", db.string(), "--quiet"}, kSmallStudent);
    ASSERT_EQ(r.code, 0) << r.out;
  }
  const std::string foreign = file("foreign.safetensors").string();
  ASSERT_EQ(run_cli({"export", "--db", small.string(), "--out", foreign}).code, 0);

  const std::string before = read_bytes(big);
  CliResult r = run_cli({"import", "--db", big.string(), foreign});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "another teacher");
  EXPECT_HAS(r.out, "multi_head_all-MiniLM-L6-v2");  // both names...
  EXPECT_HAS(r.out, "another cluster set");           // ...and what differs
  EXPECT_HAS(r.out, "--force");
  EXPECT_EQ(read_bytes(big), before) << "a refused import must leave the store byte for byte as it was";
  {
    const Store store = Store::open_read_only(big);
    const auto own = Searcher::load(store).student_provenance();
    ASSERT_TRUE(own.has_value());
    EXPECT_EQ(own->teacher, TeacherMatch::Matches);
    EXPECT_FALSE(own->forced);
  }

  r = run_cli({"import", "--db", big.string(), "--force", foreign});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "forced");
  r = run_cli({"stats", "--db", big.string(), "--json"});
  ASSERT_EQ(r.code, 0) << r.out;
  const json stats = json::parse(r.out);
  ASSERT_EQ(stats["students"].size(), 1u);
  EXPECT_EQ(stats["students"][0]["teacher"]["match"], "differs");
  EXPECT_EQ(stats["students"][0]["teacher"]["forced"], true);
  EXPECT_HAS(run_cli({"stats", "--db", big.string()}).out, "FOREIGN, imported with --force");
  r = run_cli({"query", "--db", big.string(), "--method", "student", "how do I get my password back"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "warning: the student of projection \"multi_head_all-MiniLM-L6-v2\": teacher differs");
  const Store store = Store::open_read_only(big);
  const auto forced = Searcher::load(store).student_provenance();
  ASSERT_TRUE(forced.has_value());
  EXPECT_EQ(forced->teacher, TeacherMatch::Differs);
  EXPECT_TRUE(forced->forced);
  EXPECT_HAS(forced->detail, "another cluster set");
  // The server serves it, flagged: a warning at start and in /v1/info.
  ServerOptions served_options;
  served_options.db = big;
  served_options.port = 0;
  const Server server(served_options);
  std::string warnings;
  for (const std::string& w : server.served().warnings) warnings += w + "\n";
  EXPECT_HAS(warnings, "the student of projection \"multi_head_all-MiniLM-L6-v2\" was distilled from another teacher "
                       "(imported with --force)");
}

TEST_F(Models, AStudentWithoutAFingerprintNeedsForce) {
  const fs::path db = file("demo.db");
  testing_support::make_trained_demo_store(db, /*small=*/true);
  ASSERT_EQ(cli({"distill", "--db", db.string(), "--quiet"}, kSmallStudent).code, 0);
  // As an older ldaproj or PyTorch writes it: weights and config, no fingerprint.
  const std::string old_file = file("old.safetensors").string();
  {
    const Store store = Store::open(db);
    write_student_safetensors(old_file, store.load_student()->weights);
  }
  const std::string before = read_bytes(db);
  CliResult r = run_cli({"import", "--db", db.string(), old_file});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "no teacher fingerprint");
  EXPECT_HAS(r.out, "--force");
  EXPECT_EQ(read_bytes(db), before);
  r = run_cli({"import", "--db", db.string(), "--force", old_file});
  ASSERT_EQ(r.code, 0) << r.out;
  const Store store = Store::open_read_only(db);
  const auto provenance = store.load_student()->provenance;
  EXPECT_EQ(provenance.teacher, TeacherMatch::Unknown);
  EXPECT_TRUE(provenance.forced);
}

TEST_F(Models, AStudentIsNotImportedIntoADatabaseThatDoesNotExist) {
  const fs::path db = file("demo.db");
  testing_support::make_trained_demo_store(db, /*small=*/true);
  ASSERT_EQ(cli({"distill", "--db", db.string(), "--quiet"}, kSmallStudent).code, 0);
  const std::string student = file("student.safetensors").string();
  ASSERT_EQ(run_cli({"export", "--db", db.string(), "--out", student}).code, 0);
  const fs::path fresh = file("other.db");
  const CliResult r = run_cli({"import", "--db", fresh.string(), student});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "does not exist");
  EXPECT_HAS(r.out, "distilled from");
  EXPECT_FALSE(fs::exists(fresh)) << "no empty database may be left behind";
}

// A student whose teacher was replaced while it trained is refused, not
// stored against the new teacher.
TEST_F(Models, SaveStudentRefusesAFingerprintOfAnotherTeacher) {
  const fs::path a = file("a.db"), b = file("b.db");
  testing_support::make_trained_demo_store(a, /*small=*/true);
  testing_support::make_trained_demo_store(b);
  Store sa = Store::open(a), sb = Store::open(b);
  ASSERT_EQ(cli({"distill", "--db", a.string(), "--quiet"}, kSmallStudent).code, 0);
  StoredStudent student = *sa.load_student();
  student.projection = sb.load_projection()->name;
  EXPECT_THROW(sb.save_student(student), InputError);
  EXPECT_TRUE(sb.students().empty());
  student.forced = true;
  sb.save_student(student);
  EXPECT_EQ(sb.load_student()->provenance.teacher, TeacherMatch::Differs);
}

TEST_F(Models, TrainTwiceKeepsBothProjectionsAndTheFirstsStudent) {
  const fs::path db = file("demo.db");
  const std::string d = db.string();
  testing_support::make_trained_demo_store(db, /*small=*/true);
  const std::string first = "multi_head_all-MiniLM-L6-v2";
  ASSERT_EQ(cli({"distill", "--db", d, "--quiet"}, kSmallStudent).code, 0);

  CliResult r = run_cli({"train", "--db", d, "--quiet", "--no-tune", "--temperature", "0.05"});
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string second = first + "-2";
  EXPECT_HAS(r.out, "trained projection \"" + second + "\"");
  EXPECT_HAS(r.out, "\"" + first + "\" is kept");
  {
    const Store store = Store::open_read_only(db);
    const Searcher active = Searcher::load(store);
    EXPECT_EQ(active.projection_name(), second);
    EXPECT_FALSE(active.has_student());
    const Searcher earlier = Searcher::load(store, first);
    EXPECT_TRUE(earlier.has_student()) << "train must not drop the earlier projection's student";
  }
  r = run_cli({"projections", "list", "--db", d, "--json"});
  ASSERT_EQ(r.code, 0) << r.out;
  json list = json::parse(r.out)["projections"];
  ASSERT_EQ(list.size(), 2u) << r.out;
  EXPECT_EQ(list[0]["name"], first);
  EXPECT_FALSE(list[0]["active"].get<bool>());
  EXPECT_EQ(list[0]["student"]["teacher"], "matches");
  EXPECT_EQ(list[1]["name"], second);
  EXPECT_TRUE(list[1]["active"].get<bool>());
  EXPECT_TRUE(list[1]["student"].is_null());

  // An existing --name is refused (before any training), saying what --replace would drop.
  r = run_cli({"train", "--db", d, "--quiet", "--name", first});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "already exists");
  EXPECT_HAS(r.out, "--replace");
  EXPECT_HAS(r.out, "its student");

  // Activate: every command's default follows.
  r = run_cli({"projections", "activate", "--db", d, first});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "now active");
  {
    const Store store = Store::open_read_only(db);
    const Searcher active = Searcher::load(store);
    EXPECT_EQ(active.projection_name(), first);
    EXPECT_TRUE(active.has_student());
  }
  r = run_cli({"projections", "activate", "--db", d, "nope"});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "no projection named \"nope\"");
  EXPECT_HAS(r.out, "\"" + second + "\"");  // lists what there is

  // Deleting the active one needs a replacement or --force; nothing changes until then.
  const std::string before = read_bytes(db);
  r = run_cli({"projections", "delete", "--db", d, first});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "is the active one");
  EXPECT_HAS(r.out, "--activate " + second);
  EXPECT_EQ(read_bytes(db), before);
  r = run_cli({"projections", "delete", "--db", d, first, "--activate", second});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "with its student");
  EXPECT_HAS(r.out, "\"" + second + "\" is now active");
  r = run_cli({"projections", "list", "--db", d, "--json"});
  list = json::parse(r.out)["projections"];
  ASSERT_EQ(list.size(), 1u);
  EXPECT_TRUE(list[0]["active"].get<bool>());
  EXPECT_TRUE(Store::open_read_only(db).students().empty());

  // --replace replaces and says what it dropped.
  ASSERT_EQ(cli({"distill", "--db", d, "--quiet"}, kSmallStudent).code, 0);
  r = run_cli({"train", "--db", d, "--quiet", "--no-tune", "--name", second, "--replace"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "dropped the student");
  EXPECT_EQ(Store::open_read_only(db).projections().size(), 1u);
  r = run_cli({"projections", "delete", "--db", d, second, "--force"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(Store::open_read_only(db).projections().empty());
}

// `cp` of a live WAL store misses what is still in the -wal file; backup does not.
TEST_F(Models, BackupOfALiveWalStoreKeepsTheLastProjection) {
  const fs::path db = file("live.db");
  testing_support::make_trained_demo_store(db, /*small=*/true);
  Store writer = Store::open(db);  // stays open: SQLite checkpoints only when the last connection closes
  TeacherTrainOptions options;
  options.name = "latest";
  train_teacher(writer, testing_support::kBundledModelName, options);
  const fs::path wal = db.string() + "-wal";
  ASSERT_TRUE(fs::exists(wal) && fs::file_size(wal) > 0) << "the test needs commits still in the WAL";

  const fs::path copied = file("copied.db");
  fs::copy_file(db, copied);
  EXPECT_FALSE(Store::open_read_only(copied).load_projection("latest").has_value())
      << "if cp kept the WAL's commits, the README's warning would be wrong";

  const fs::path backup = file("backup.db");
  CliResult r = run_cli({"backup", "--db", db.string(), backup.string()});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "2 projection(s)");
  {
    const Store store = Store::open_read_only(backup);
    const Searcher searcher = Searcher::load(store);
    EXPECT_EQ(searcher.projection_name(), "latest");
    const auto results = searcher.search(testing_support::random_unit_rows(1, testing_support::kBundledModelDim, 3),
                                         SearchOptions{});
    ASSERT_EQ(results.size(), 1u);
    EXPECT_FALSE(results[0].answers.empty());
  }
  // Never overwrites, and a failure leaves nothing behind.
  const std::string kept = read_bytes(backup);
  r = run_cli({"backup", "--db", db.string(), backup.string()});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "exists");
  EXPECT_EQ(read_bytes(backup), kept);
  r = run_cli({"backup", "--db", db.string(), file("no/such/dir/x.db").string()});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_HAS(r.out, "does not exist");
  for (const auto& entry : fs::directory_iterator(dir_)) {
    EXPECT_EQ(entry.path().string().find(".partial-"), std::string::npos) << entry.path();
  }
}

TEST_F(Models, DistillWarnsWhenTheStudentIsLargerThanTheTeacher) {
  const fs::path db = file("tiny.db");
  testing_support::make_trained_demo_store(db, /*small=*/true);
  CliResult r = cli({"distill", "--db", db.string(), "--json"}, kSmallStudent);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "warning: the student has");
  EXPECT_HAS(r.out, "times the teacher's head matrices");
  EXPECT_HAS(r.out, "--method multi-head");
  const json out = last_json_line(r.out);
  ASSERT_EQ(out["warnings"].size(), 1u) << r.out;
  EXPECT_GT(out["parameters"].get<double>(), out["teacher_parameters"].get<double>());
  r = cli({"distill", "--db", db.string()}, kSmallStudent);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_HAS(r.out, "warning: the student has");
}

}  // namespace
}  // namespace ldaproj
