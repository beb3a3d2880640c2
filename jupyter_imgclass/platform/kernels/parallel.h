// The kernels' one loop over XLA's intra-op thread pool.
//
// parallel_for(pool, count, make_scratch, body) calls body(scratch, q) once for every q in [0, count): on this
// thread and on up to pool.num_threads() - 1 helpers scheduled on the pool, each claiming the next q from a shared
// counter. This thread waits only for the items already claimed, so a helper that never starts costs nothing and a
// late one finds none left (it returns at once: it touches neither the caller's buffers nor make_scratch).
//
// A thread that claims an item first calls make_scratch() once and keeps the result for all of its items (a
// per-thread buffer, the AMX tile configuration); it is destroyed when that thread runs out of items, which may be
// after parallel_for has returned, so a scratch must own what it holds. Which thread runs which item varies: a
// kernel whose result must not depend on the thread count writes each item's result to its own place and sums
// them in order afterwards.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include "xla/ffi/api/ffi.h"

namespace imgclass {

struct NoScratch {};

template <typename MakeScratch, typename Body>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t count, MakeScratch make_scratch, Body body) {
  if (count <= 0) return;
  struct Progress {
    std::atomic<int64_t> next{0}, done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto progress = std::make_shared<Progress>();
  auto work = [progress, count, make_scratch, body]() {
    int64_t q = progress->next.fetch_add(1);
    if (q >= count) return;
    auto scratch = make_scratch();
    for (; q < count; q = progress->next.fetch_add(1)) {
      body(scratch, q);
      if (progress->done.fetch_add(1) + 1 == count) {
        std::lock_guard<std::mutex> lock(progress->mu);
        progress->cv.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, count - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work]() { work(); });
  work();
  std::unique_lock<std::mutex> lock(progress->mu);
  progress->cv.wait(lock, [&] { return progress->done.load() == count; });
}

// The same without a per-thread scratch: body(q).
template <typename Body>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t count, Body body) {
  parallel_for(pool, count, [] { return NoScratch{}; }, [body](NoScratch&, int64_t q) { body(q); });
}

}  // namespace imgclass
