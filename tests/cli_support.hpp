// Running the real `ldaproj` binary from tests, and a trained demo database
// built with it once per build and shared by every test that needs one.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace ldaproj::testing_support {

struct CliRun {
  int code = -1;
  std::string out;  // stdout and stderr together
};

inline CliRun run_cli(const std::string& args) {
  const std::string cmd = std::string(LDAPROJ_CLI_PATH) + " " + args + " 2>&1";
  CliRun r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline std::string demo_file(const char* name) {
  return std::string(LDAPROJ_SOURCE_DIR) + "/data/demo/" + name;
}

// Copies a trained demo database (clusters.json + extra.jsonl imported,
// embedded, trained with the defaults) to `dest`. The first call after the CLI
// was rebuilt makes it with the CLI (a few seconds) in <build>/test-cache/;
// later calls, from any test process, only copy it.
inline void copy_trained_demo_db(const std::filesystem::path& dest) {
  namespace fs = std::filesystem;
  const fs::path cli(LDAPROJ_CLI_PATH);
  const fs::path cache_dir = cli.parent_path() / "test-cache";
  const fs::path cached = cache_dir / "demo-trained.db";
  std::error_code ec;
  const bool fresh = fs::exists(cached, ec) && fs::last_write_time(cached, ec) > fs::last_write_time(cli, ec);
  if (!fresh) {
    fs::create_directories(cache_dir);
    // Built under a private name and renamed into place, so test processes
    // running in parallel never see a half-built file.
    const fs::path building = cache_dir / ("demo-building-" + std::to_string(getpid()) + ".db");
    fs::remove(building, ec);
    const std::string db = building.string();
    for (const std::string& step :
         {"import --db " + db + " " + demo_file("clusters.json") + " " + demo_file("extra.jsonl"),
          "embed --quiet --db " + db, "train --db " + db}) {
      const CliRun r = run_cli(step);
      if (r.code != 0) throw std::runtime_error("preparing the demo database: ldaproj " + step + ": " + r.out);
    }
    fs::rename(building, cached);
  }
  fs::copy_file(cached, dest, fs::copy_options::overwrite_existing);
}

}  // namespace ldaproj::testing_support
