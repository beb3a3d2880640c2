// Depthwise convolution kernel gradient: dk[i, j, c] = sum_{n, oy, ox} x[n, oy*s+i-ph, ox*s+j-pw, c] * dy[n, oy, ox, c]
#include <cstdint>
#include <cstring>
#include <vector>
#include "parallel.h"
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

static ffi::Error DepthwiseKernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                   ffi::ResultBuffer<ffi::F32> dk, int64_t k, int64_t stride, int64_t pad_h,
                                   int64_t pad_w) {
  auto xd = x.dimensions();
  auto dd = dy.dimensions();
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3], OH = dd[1], OW = dd[2];
  const int64_t per = k * k * C;
  const float* xp = x.typed_data();
  const float* dp = dy.typed_data();
  std::vector<float> partial(N * per);
  std::vector<int64_t> lo, hi;
  columns(W, OW, k, stride, pad_w, lo, hi);
  // One image an item, each summed into its own slice of `partial`.
  imgclass::parallel_for(pool, N, [&](int64_t n) {
    one_image(xp + n * H * W * C, dp + n * OH * OW * C, partial.data() + n * per, H, W, C, OH, OW, k, stride, pad_h,
              pad_w, lo.data(), hi.data());
  });
  float* out = dk->typed_data();
  std::memset(out, 0, sizeof(float) * per);
  for (int64_t n = 0; n < N; ++n) {  // in image order: the same sum whatever the threads
    const float* p = partial.data() + n * per;
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
