// Weights trained in PyTorch load unchanged: tests/python/student_reference.py
// builds the student with torch.nn.MultiheadAttention, saves it as
// safetensors with PyTorch's outputs, and the lean forward must reproduce them
// within 1e-5. Skipped when /usr/bin/python3 has no torch (python3-torch).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>
#include <sys/wait.h>

#include "ldaproj/safetensors.hpp"
#include "ldaproj/student.hpp"
#include "temp_dir_test_base.hpp"

namespace ldaproj {
namespace {

constexpr int kSkipExitCode = 77;

class StudentPyTorch : public testing_support::TempDirTest {};

TEST_F(StudentPyTorch, PyTorchTrainedWeightsGiveTheSameOutputs) {
  const std::string python = "/usr/bin/python3";
  if (std::system((python + " -c '' 2>/dev/null").c_str()) != 0) GTEST_SKIP() << python << " is not installed";
  const std::string script = std::string(LDAPROJ_SOURCE_DIR) + "/tests/python/student_reference.py";
  const std::string listing = (dir_ / "configs.txt").string();
  const int status = std::system((python + " " + script + " " + dir_.string() + " > " + listing).c_str());
  ASSERT_TRUE(WIFEXITED(status)) << "the reference script did not exit normally";
  if (WEXITSTATUS(status) == kSkipExitCode) GTEST_SKIP() << "torch is not installed for " << python;
  ASSERT_EQ(WEXITSTATUS(status), 0) << script << " failed";

  std::ifstream names(listing);
  std::string name;
  int checked = 0;
  while (names >> name) {
    SCOPED_TRACE(name);
    const StudentWeights weights = read_student_safetensors(dir_ / (name + ".safetensors"));
    const SafeTensorsFile expected = SafeTensorsFile::open(dir_ / (name + ".expected.safetensors"));
    const TensorInfo& q_info = expected.info("queries");
    Matrix queries(static_cast<std::size_t>(q_info.shape[0]), static_cast<std::size_t>(q_info.shape[1]));
    queries.data = expected.load_f32("queries");
    const std::vector<float> reference = expected.load_f32("output");

    const Matrix output = StudentModel(weights).forward(queries);
    ASSERT_EQ(output.data.size(), reference.size());
    double worst = 0;
    for (std::size_t i = 0; i < reference.size(); ++i)
      worst = std::max(worst, double(std::fabs(output.data[i] - reference[i])));
    EXPECT_LT(worst, 1e-5);
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

}  // namespace
}  // namespace ldaproj
