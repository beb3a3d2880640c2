// Patch matrix of a stride-1 "SAME" k x k convolution: out[n, y, x, (i*k + j)*C + c] = in[n, y+i-p, x+j-p, c]
// (zero outside the image, p = k / 2), converted to the output's type (float32 or bfloat16, rounded to nearest
// even) on the way; the input is float32 or bfloat16.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include "bf16.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using imgclass::from_bf16;
using imgclass::to_bf16;

template <typename In, typename Out>
inline void convert(const In* __restrict src, Out* __restrict dst, int64_t n) {
  if constexpr (std::is_same_v<In, Out>) {
    std::memcpy(dst, src, sizeof(Out) * n);
  } else if constexpr (std::is_same_v<In, float>) {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) dst[c] = to_bf16(src[c]);
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) dst[c] = from_bf16(src[c]);
  }
}

template <typename In, typename Out>
void rows(const In* x, Out* out, int64_t r0, int64_t r1, int64_t H, int64_t W, int64_t C, int64_t k) {
  const int64_t p = k / 2, KC = k * k * C;
  for (int64_t r = r0; r < r1; ++r) {  // r: one (image, output row)
    const int64_t n = r / H, y = r % H;
    const In* img = x + n * H * W * C;
    Out* orow = out + r * W * KC;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t iy = y + i - p;
      for (int64_t j = 0; j < k; ++j) {
        Out* o = orow + (i * k + j) * C;
        if (iy < 0 || iy >= H) {
          for (int64_t xc = 0; xc < W; ++xc) std::memset(o + xc * KC, 0, sizeof(Out) * C);
          continue;
        }
        const In* src = img + iy * W * C;
        const int64_t lo = std::max<int64_t>(0, p - j), hi = std::min<int64_t>(W, W + p - j);
        for (int64_t xc = 0; xc < lo; ++xc) std::memset(o + xc * KC, 0, sizeof(Out) * C);
        for (int64_t xc = lo; xc < hi; ++xc) convert(src + (xc + j - p) * C, o + xc * KC, C);
        for (int64_t xc = hi; xc < W; ++xc) std::memset(o + xc * KC, 0, sizeof(Out) * C);
      }
    }
  }
}

// The transposed patch matrix, outT[(i*k + j)*C + c, (n*H + y)*W + x], for images [n0, n1): each image is first
// transposed and zero-padded into `buf` ([C, H + 2p, W + 2p]), so every output segment is a plain copy of W values
// from one padded row (a loop the compiler vectorises: a call to memcpy per 14-28 values cost more than the copy).
template <typename In, typename Out>
void images_t(const In* x, Out* out, int64_t n0, int64_t n1, int64_t N, int64_t H, int64_t W, int64_t C,
              int64_t k, Out* buf) {
  const int64_t p = k / 2, HW = H * W, M = N * HW, PH = H + 2 * p, PW = W + 2 * p;
  std::fill(buf, buf + C * PH * PW, Out(0));
  for (int64_t n = n0; n < n1; ++n) {
    const In* img = x + n * HW * C;
    for (int64_t y = 0; y < H; ++y)
      for (int64_t xc = 0; xc < W; ++xc) {
        const In* src = img + (y * W + xc) * C;
        Out* dst = buf + (y + p) * PW + xc + p;
        for (int64_t c = 0; c < C; ++c) convert(src + c, dst + c * PH * PW, 1);
      }
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j)
        for (int64_t c = 0; c < C; ++c) {
          Out* __restrict o = out + ((i * k + j) * C + c) * M + n * HW;
          const Out* plane = buf + c * PH * PW + i * PW + j;
          for (int64_t y = 0; y < H; ++y) {
            const Out* __restrict src = plane + y * PW;
            Out* __restrict orow = o + y * W;
#pragma omp simd
            for (int64_t xc = 0; xc < W; ++xc) orow[xc] = src[xc];
          }
        }
  }
}

template <typename In, typename Out>
void run(ffi::ThreadPool& pool, const In* x, Out* out, int64_t N, int64_t H, int64_t W, int64_t C, int64_t k,
         bool transposed) {
  const int64_t R = transposed ? N : N * H;  // work items: images, or (image, row) pairs
  const int64_t chunk = std::max<int64_t>(1, R / (8 * std::max<int64_t>(1, pool.num_threads())));
  const int64_t p = k / 2;
  auto scratch = [=] {  // the transposed layout's padded image, one per thread
    return std::unique_ptr<Out[]>(transposed ? new Out[(H + 2 * p) * (W + 2 * p) * C] : nullptr);
  };
  imgclass::parallel_for(pool, (R + chunk - 1) / chunk, scratch, [&](std::unique_ptr<Out[]>& buf, int64_t q) {
    const int64_t r0 = q * chunk, r1 = std::min(R, (q + 1) * chunk);
    if (transposed)
      images_t(x, out, r0, r1, N, H, W, C, k, buf.get());
    else
      rows(x, out, r0, r1, H, W, C, k);
  });
}

}  // namespace

static ffi::Error Im2colImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> out, int64_t k,
                              int64_t transposed) {
  auto d = x.dimensions();
  if (d.size() != 4) return ffi::Error::InvalidArgument("im2col: x must be [N, H, W, C]");
  const int64_t N = d[0], H = d[1], W = d[2], C = d[3];
  const auto in_t = x.element_type(), out_t = out->element_type();
  void* o = out->untyped_data();
  const void* i = x.untyped_data();
  if (in_t == ffi::F32 && out_t == ffi::BF16)
    run(pool, static_cast<const float*>(i), static_cast<uint16_t*>(o), N, H, W, C, k, transposed);
  else if (in_t == ffi::BF16 && out_t == ffi::BF16)
    run(pool, static_cast<const uint16_t*>(i), static_cast<uint16_t*>(o), N, H, W, C, k, transposed);
  else if (in_t == ffi::F32 && out_t == ffi::F32)
    run(pool, static_cast<const float*>(i), static_cast<float*>(o), N, H, W, C, k, transposed);
  else if (in_t == ffi::BF16 && out_t == ffi::F32)
    run(pool, static_cast<const uint16_t*>(i), static_cast<float*>(o), N, H, W, C, k, transposed);
  else
    return ffi::Error::InvalidArgument("im2col: float32 or bfloat16 only");
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(Im2col, Im2colImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("k")
                                  .Attr<int64_t>("transposed"));
