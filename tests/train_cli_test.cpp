// `ldaproj train` as a user runs it: self-tuning by default, explicit flags
// winning over it, --no-tune and --val, and a store with over a thousand heads
// (candidate-mode key learning) trained without an abort.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "cli_support.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

using nlohmann::json;
using testing_support::CliRun;
using testing_support::run_cli;

class TrainCli : public testing_support::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    db_ = file("demo.db").string();
    testing_support::copy_trained_demo_db(db_);
  }
  // The JSON object on the first '{' line of `out` (stderr lines come first
  // when they are there).
  static json parse_json(const std::string& out) {
    const auto at = out.find("\n{");
    return json::parse(out.substr(out.front() == '{' ? 0 : at + 1));
  }
  json train(const std::string& flags) {
    const CliRun r = run_cli("train --db " + db_ + " --quiet --json " + flags);
    EXPECT_EQ(r.code, 0) << r.out;
    return parse_json(r.out);
  }
  double multi_head_r1(const std::string& projection) {
    const CliRun r = run_cli("validate --db " + db_ + " --projection " + projection + " --methods multi-head --json --test " +
                             testing_support::demo_file("heldout.json"));
    EXPECT_EQ(r.code, 0) << r.out;
    return parse_json(r.out)["methods"]["multi_head"]["recall_at_1"].get<double>();
  }
  std::string db_;
};

TEST_F(TrainCli, TunesByDefaultAndStoresWhatItChose) {
  const json t = train("--name tuned");
  ASSERT_TRUE(t.contains("tuning")) << t;
  const json& tuning = t["tuning"];
  EXPECT_TRUE(tuning["tuned"].get<bool>()) << t;
  EXPECT_EQ(tuning["validation"]["source"], "slice");
  EXPECT_FLOAT_EQ(t["temperature"].get<float>(), tuning["chosen"]["temperature"].get<float>());
  EXPECT_EQ(t["key_epochs"], tuning["chosen"]["key_epochs"]);
  EXPECT_GT(tuning["trials"].size(), 5u);
  // The held-out slice is training questions only: the refit uses all 295.
  EXPECT_EQ(t["questions"], 295);
  // stats shows the choice in text and every trial under --json.
  const CliRun stats = run_cli("stats --db " + db_);
  EXPECT_NE(stats.out.find("tuned: temperature"), std::string::npos) << stats.out;
  const CliRun stats_json = run_cli("stats --db " + db_ + " --json");
  EXPECT_NE(stats_json.out.find("\"trials\""), std::string::npos) << stats_json.out;
  // The same seed tunes to the same choice.
  const json again = train("--name tuned_again");
  EXPECT_EQ(again["tuning"]["chosen"], tuning["chosen"]);
  EXPECT_EQ(again["tuning"]["trials"], tuning["trials"]);
  // The demo's held-out file (never seen by the tuning) is well above plain cosine.
  EXPECT_GE(multi_head_r1("tuned"), 0.82);
}

TEST_F(TrainCli, ExplicitFlagsWinAndNoTuneIsTheOriginalTeacher) {
  const json before = train("--name before --no-tune");
  EXPECT_FLOAT_EQ(before["temperature"].get<float>(), 0.1f);
  EXPECT_EQ(before["key_epochs"], 0);
  const json fixed = train("--name fixed --temperature 0.1 --learn-keys 0");
  EXPECT_FLOAT_EQ(fixed["temperature"].get<float>(), 0.1f);
  EXPECT_EQ(fixed["key_epochs"], 0);
  // Nothing left to tune: the same teacher as --no-tune, to the last query.
  EXPECT_EQ(multi_head_r1("before"), multi_head_r1("fixed"));

  const json temperature_only = train("--name keys_tuned --temperature 0.05");
  EXPECT_FLOAT_EQ(temperature_only["temperature"].get<float>(), 0.05f);
  for (const json& trial : temperature_only["tuning"]["trials"]) {
    EXPECT_FLOAT_EQ(trial["temperature"].get<float>(), 0.05f) << trial;
  }
  const json epochs_only = train("--name tau_tuned --learn-keys 25");
  EXPECT_EQ(epochs_only["key_epochs"], 25);
}

TEST_F(TrainCli, ValTuneOnTheGivenFile) {
  const json t = train("--name on_val --val " + testing_support::demo_file("heldout.json"));
  EXPECT_EQ(t["tuning"]["validation"]["source"], "file") << t;
  EXPECT_EQ(t["tuning"]["validation"]["queries"], 62) << t;
  const CliRun missing = run_cli("train --db " + db_ + " --val " + file("nope.json").string());
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(missing.out.find("nope.json"), std::string::npos) << missing.out;
}

// Over a thousand heads: key learning runs over candidates (beyond 1,024 keys)
// inside the tuning, with a progress line per phase, and ends in a projection.
TEST_F(TrainCli, AStoreBeyondExactKeyLearningTrainsWithoutAnAbort) {
  // 1,200 heads: past the 1,024 of exact key learning, small enough for the ASan suite.
  const std::string db = synthetic_store(1200, 3, 32);
  const CliRun r = run_cli("train --db " + db + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("train: tuning on"), std::string::npos) << r.out;
  const json t = parse_json(r.out);
  EXPECT_EQ(t["heads"], 1200);
  EXPECT_TRUE(t["tuning"]["tuned"].get<bool>()) << t;
  if (t["key_epochs"].get<int>() > 0) {
    EXPECT_FALSE(t["learned_keys"]["exact"].get<bool>()) << t;
  }
  bool learned = false;
  for (const json& trial : t["tuning"]["trials"]) learned |= trial["key_epochs"].get<int>() > 0;
  EXPECT_TRUE(learned) << "the tuning should have tried learned keys: " << t;
}

}  // namespace
}  // namespace ldaproj
