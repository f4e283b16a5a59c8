// Runs the real `ldaproj` binary from tests: arguments passed as they are (no
// shell, so any bytes can be given), optionally as another user, with a
// file-size limit or in the background to be killed.
#pragma once
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ldaproj::testing_support {

struct CliOptions {
  std::optional<uid_t> as_user;          // setuid/setgid to this id before exec
  std::optional<rlim_t> file_size_limit;  // RLIMIT_FSIZE in bytes, SIGXFSZ ignored
  std::string standard_input;
  bool capture = true;  // false: output goes to /dev/null
  std::vector<std::string> environment;  // NAME=value entries added to (or replacing) the test's own
};

struct CliResult {
  int code = -1;    // exit status, or -1 when killed by a signal
  int signal = 0;   // the signal that ended it, if any
  std::string out;  // stdout and stderr together
};

inline std::string cli_path() { return LDAPROJ_CLI_PATH; }

// Starts the CLI with `args` and returns its pid; `output_fd` (if >= 0)
// receives its stdout and stderr, `input_fd` (if >= 0) is its stdin.
inline pid_t spawn_cli(const std::vector<std::string>& args, const CliOptions& options = {}, int output_fd = -1,
                       int input_fd = -1) {
  std::vector<std::string> argv_strings{cli_path()};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const auto& extra : options.environment) replaced |= extra.compare(0, name.size(), name) == 0;
    if (!replaced) env_strings.push_back(entry);
  }
  env_strings.insert(env_strings.end(), options.environment.begin(), options.environment.end());
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec.
    const int null_fd = open("/dev/null", O_RDWR);
    dup2(input_fd >= 0 ? input_fd : null_fd, 0);
    dup2(output_fd >= 0 ? output_fd : null_fd, 1);
    dup2(output_fd >= 0 ? output_fd : null_fd, 2);
    if (options.file_size_limit) {
      signal(SIGXFSZ, SIG_IGN);  // writes past the limit fail with EFBIG instead of killing
      const struct rlimit limit{*options.file_size_limit, *options.file_size_limit};
      if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(125);
    }
    if (options.as_user) {
      if (setgroups(0, nullptr) != 0 || setgid(*options.as_user) != 0 || setuid(*options.as_user) != 0) _exit(126);
    }
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  return pid;
}

inline CliResult wait_cli(pid_t pid) {
  CliResult result;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) result.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

// Runs the CLI to completion and returns its exit code and output.
inline CliResult run_cli(const std::vector<std::string>& args, const CliOptions& options = {}) {
  int out_pipe[2] = {-1, -1}, in_pipe[2] = {-1, -1};
  if (options.capture && pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  const bool feed = !options.standard_input.empty();
  if (feed && pipe2(in_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = spawn_cli(args, options, out_pipe[1], in_pipe[0]);
  if (options.capture) close(out_pipe[1]);
  if (feed) {
    close(in_pipe[0]);
    // The CLI reads all of its input before it writes, so this cannot deadlock.
    const std::string& text = options.standard_input;
    std::size_t written = 0;
    const auto old_handler = signal(SIGPIPE, SIG_IGN);
    while (written < text.size()) {
      const ssize_t n = write(in_pipe[1], text.data() + written, text.size() - written);
      if (n <= 0) break;
      written += static_cast<std::size_t>(n);
    }
    signal(SIGPIPE, old_handler);
    close(in_pipe[1]);
  }
  std::string out;
  if (options.capture) {
    char buffer[4096];
    ssize_t n;
    while ((n = read(out_pipe[0], buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR)) {
      if (n > 0) out.append(buffer, static_cast<std::size_t>(n));
    }
    close(out_pipe[0]);
  }
  CliResult result = wait_cli(pid);
  result.out = std::move(out);
  return result;
}

}  // namespace ldaproj::testing_support
