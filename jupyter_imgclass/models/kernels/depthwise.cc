// Depthwise convolution kernel gradient: dk[i, j, c] = sum_{n, oy, ox} x[n, oy*s+i-ph, ox*s+j-pw, c] * dy[n, oy, ox, c]
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// ox range [lo[j], hi[j]) of the output columns whose tap j falls inside the image
// (0 <= ox*s + j - pw < W); the same for every row and image, so computed once per call.
static void columns(int64_t W, int64_t OW, int64_t k, int64_t s, int64_t pw, std::vector<int64_t>& lo,
                    std::vector<int64_t>& hi) {
  lo.assign(k, 0);
  hi.assign(k, 0);
  for (int64_t j = 0; j < k; ++j) {
    int64_t a = 0, b = OW;
    while (a < OW && a * s + j - pw < 0) ++a;
    while (b > a && (b - 1) * s + j - pw >= W) --b;
    lo[j] = a;
    hi[j] = b;
  }
}

static void one_image(const float* x, const float* dy, float* acc, int64_t H, int64_t W, int64_t C,
                      int64_t OH, int64_t OW, int64_t k, int64_t s, int64_t ph, int64_t pw,
                      const int64_t* lo, const int64_t* hi) {
  std::memset(acc, 0, sizeof(float) * k * k * C);
  for (int64_t oy = 0; oy < OH; ++oy) {
    const float* dyrow = dy + oy * OW * C;
    for (int64_t i = 0; i < k; ++i) {
      int64_t iy = oy * s + i - ph;
      if (iy < 0 || iy >= H) continue;
      const float* xrow = x + iy * W * C;
      for (int64_t j = 0; j < k; ++j) {
        float* __restrict a = acc + (i * k + j) * C;
        for (int64_t ox = lo[j]; ox < hi[j]; ++ox) {
          const float* __restrict xv = xrow + (ox * s + j - pw) * C;
          const float* __restrict dv = dyrow + ox * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) a[c] += xv[c] * dv[c];
        }
      }
    }
  }
}

struct Job {
  const float* x;
  const float* dy;
  int64_t N, H, W, C, OH, OW, k, s, ph, pw, per;
  std::vector<float> partial;
  std::vector<int64_t> lo, hi;
  std::atomic<int64_t> next{0}, done{0};
  std::mutex mu;
  std::condition_variable cv;

  void Work() {
    for (int64_t n; (n = next.fetch_add(1)) < N;) {
      one_image(x + n * H * W * C, dy + n * OH * OW * C, partial.data() + n * per, H, W, C, OH, OW, k, s, ph,
                pw, lo.data(), hi.data());
      if (done.fetch_add(1) + 1 == N) {
        std::lock_guard<std::mutex> lock(mu);
        cv.notify_all();
      }
    }
  }
};

static ffi::Error DepthwiseKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                   ffi::ResultBuffer<ffi::F32> dk, int64_t k, int64_t stride, int64_t pad_h,
                                   int64_t pad_w) {
  auto xd = x.dimensions();
  auto dd = dy.dimensions();
  auto job = std::make_shared<Job>();
  job->x = x.typed_data();
  job->dy = dy.typed_data();
  job->N = xd[0]; job->H = xd[1]; job->W = xd[2]; job->C = xd[3]; job->OH = dd[1]; job->OW = dd[2];
  job->k = k; job->s = stride; job->ph = pad_h; job->pw = pad_w;
  job->per = k * k * job->C;
  job->partial.resize(job->N * job->per);
  columns(job->W, job->OW, k, stride, pad_w, job->lo, job->hi);
  // Images are claimed from a counter by this thread and by helpers on XLA's pool; this thread waits only
  // for images already claimed, so a helper that never starts costs nothing (a late one finds none left).
  int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, job->N - 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([job]() { job->Work(); });
  job->Work();
  {
    std::unique_lock<std::mutex> lock(job->mu);
    job->cv.wait(lock, [&] { return job->done.load() == job->N; });
  }
  float* out = dk->typed_data();
  const int64_t per = job->per;
  std::memset(out, 0, sizeof(float) * per);
  for (int64_t n = 0; n < job->N; ++n) {  // in image order: the same sum whatever the threads
    const float* p = job->partial.data() + n * per;
#pragma omp simd
    for (int64_t q = 0; q < per; ++q) out[q] += p[q];
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(DepthwiseKernelGrad, DepthwiseKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("k")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_h")
                                  .Attr<int64_t>("pad_w"));
