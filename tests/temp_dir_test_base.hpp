// A test fixture base that gives each test its own scratch directory,
// removed afterwards.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "ldaproj/synthetic.hpp"

namespace ldaproj::testing_support {

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device seed;
    dir_ = std::filesystem::temp_directory_path() /
           ("ldaproj_test_" + std::to_string(seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::filesystem::path file(const std::string& name) const { return dir_ / name; }

  // Writes content (binary, truncating) to `path` and returns it.
  std::filesystem::path write_file(const std::filesystem::path& path, const std::string& content) const {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    return path;
  }

  // A database of synthetic clusters (`ldaproj synth`'s generator) in the
  // scratch directory; returns its path.
  std::string synthetic_store(std::size_t clusters, std::size_t questions_per_cluster, std::size_t dim) const {
    SyntheticSpec spec;
    spec.clusters = clusters;
    spec.questions_per_cluster = questions_per_cluster;
    spec.dim = dim;
    const std::string db = file("synth.db").string();
    write_synthetic_store(spec, db);
    return db;
  }

  std::filesystem::path dir_;
};

}  // namespace ldaproj::testing_support
