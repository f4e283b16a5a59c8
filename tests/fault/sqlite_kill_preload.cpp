// Test-only LD_PRELOAD library for the crash-safety tests: it stands in front
// of SQLite's sqlite3_step and sqlite3_exec in the process it is preloaded
// into (the real `ldaproj` binary), counts the calls and can SIGKILL the
// process just before one of them. That puts a kill between any two database
// statements, inside or between transactions, reproducibly, without a hook in
// the program itself.
//
//   LDAPROJ_KILL_AT_SQLITE_CALL=N      SIGKILL just before the Nth call
//   LDAPROJ_COUNT_SQLITE_CALLS_TO=FILE at a normal exit, write the number of calls to FILE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

struct sqlite3;
struct sqlite3_stmt;

namespace {

std::atomic<long> calls{0};

long kill_at() {
  static const long value = [] {
    const char* text = std::getenv("LDAPROJ_KILL_AT_SQLITE_CALL");
    return text != nullptr ? std::atol(text) : 0L;
  }();
  return value;
}

void count_one_call() {
  const long n = calls.fetch_add(1) + 1;
  if (n == kill_at()) raise(SIGKILL);
}

template <typename Function>
Function real(const char* name) {
  void* symbol = dlsym(RTLD_NEXT, name);
  if (symbol == nullptr) {
    std::fprintf(stderr, "sqlite_kill_preload: %s not found\n", name);
    std::abort();
  }
  return reinterpret_cast<Function>(symbol);
}

__attribute__((destructor)) void report_count() {
  const char* path = std::getenv("LDAPROJ_COUNT_SQLITE_CALLS_TO");
  if (path == nullptr) return;
  const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  char text[32];
  const int length = std::snprintf(text, sizeof text, "%ld\n", calls.load());
  if (length > 0) (void)!write(fd, text, static_cast<std::size_t>(length));
  close(fd);
}

}  // namespace

extern "C" {

int sqlite3_step(sqlite3_stmt* statement) {
  using Step = int (*)(sqlite3_stmt*);
  static const Step step = real<Step>("sqlite3_step");
  count_one_call();
  return step(statement);
}

int sqlite3_exec(sqlite3* db, const char* sql, int (*callback)(void*, int, char**, char**), void* context,
                 char** error) {
  using Exec = int (*)(sqlite3*, const char*, int (*)(void*, int, char**, char**), void*, char**);
  static const Exec exec = real<Exec>("sqlite3_exec");
  count_one_call();
  return exec(db, sql, callback, context, error);
}

}  // extern "C"
