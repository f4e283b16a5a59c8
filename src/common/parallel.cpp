// Worker pool behind parallel_for: workers sleep on a condition variable and
// take tasks from one shared queue of jobs; the calling thread works too.
#include "common/parallel.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

extern "C" {
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
}

namespace ldaproj::detail {

void use_blas_threads(int threads) {
  threads = std::max(1, threads);
  if (openblas_get_num_threads() != threads) openblas_set_num_threads(threads);
}

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

namespace {

// One parallel_for call: tasks are claimed by an atomic counter so the caller
// and any number of workers can share it.
struct Job {
  const std::function<void(std::size_t)>* task = nullptr;
  std::size_t count = 0;
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> done{0};
  std::mutex mutex;
  std::condition_variable finished;
  std::exception_ptr error;

  // Runs tasks until none are left; returns true when it finished the last one.
  void work() {
    for (;;) {
      const std::size_t i = next.fetch_add(1);
      if (i >= count) return;
      try {
        (*task)(i);
      } catch (...) {
        std::lock_guard lock(mutex);
        if (!error) error = std::current_exception();
      }
      if (done.fetch_add(1) + 1 == count) {
        std::lock_guard lock(mutex);
        finished.notify_all();
      }
    }
  }
};

class Pool {
 public:
  static Pool& instance() {
    static Pool pool(available_cores() - 1);
    return pool;
  }

  std::size_t workers() const { return threads_.size(); }

  void offer(const std::shared_ptr<Job>& job, std::size_t helpers) {
    {
      std::lock_guard lock(mutex_);
      for (std::size_t i = 0; i < helpers; ++i) queue_.push_back(job);
    }
    if (helpers == 1) wake_.notify_one(); else wake_.notify_all();
  }

  ~Pool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  explicit Pool(int count) {
    for (int i = 0; i < count; ++i) threads_.emplace_back([this] { run(); });
  }

  void run() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (stopping_ && queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job->work();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> threads_;
  bool stopping_ = false;
};

}  // namespace

void parallel_for(std::size_t count, int max_threads, const std::function<void(std::size_t)>& task) {
  if (count == 0) return;
  const std::size_t threads = std::min<std::size_t>(count, static_cast<std::size_t>(std::max(1, max_threads)));
  if (threads == 1) {
    for (std::size_t i = 0; i < count; ++i) task(i);
    return;
  }
  Pool& pool = Pool::instance();
  auto job = std::make_shared<Job>();
  job->task = &task;
  job->count = count;
  pool.offer(job, std::min(threads - 1, pool.workers()));
  job->work();
  {
    std::unique_lock lock(job->mutex);
    job->finished.wait(lock, [&] { return job->done.load() == job->count; });
  }
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace ldaproj::detail
