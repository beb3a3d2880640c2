// Stride-1 k x k convolution on Intel AMX tiles, bfloat16 operands and float32 accumulation, without a patch matrix:
//   y[n, yy, xx, o] = sum_{i, j, c} xp[n, yy + i, xx + j, c] * w[i, j, c, o]
// where xp is the input already zero-padded (p = k / 2 on each side, and on the right at least up to 16 + k - 1
// columns), C a multiple of 32 and O a multiple of 16. Each 16-pixel run of an output row is one tile of rows; its
// A tile for a tap and 32 channels is 16 consecutive padded pixels, loaded straight from xp (row stride C). The
// weights come in AMX's pair-interleaved layout, one 16 x 32 tile per (tap, 32 channels, 16 outputs):
//   wv[((t * C/32 + cb) * O/16 + ob) * 512 + kp * 32 + o * 2 + e] = w[t, cb * 32 + 2 * kp + e, ob * 16 + o].
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>
#include "bf16.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define IMGCLASS_AMX 1
#endif

namespace ffi = xla::ffi;

// 1 where the CPU has AMX-BF16 and Linux grants this process the tile data state (asked once).
extern "C" int ImgclassAmxReady() {
#ifdef IMGCLASS_AMX
  static const int ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return ok;
#else
  return 0;
#endif
}

#ifdef IMGCLASS_AMX
namespace {

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void configure() {  // tiles 0-3: float32 accumulators 16 x 16; 4: A 16 x 32 bf16; 5, 6: B 16 x (16 x 2) bf16
  TileConfig cfg;
  for (int t = 0; t < 7; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

struct Shape {
  int64_t N, H, W, C, O, PH, PW, k;
};

// One 16-pixel run (x0 .. x0+15) of output row (n, yy), output channels [og*64, og*64 + 16*NO).
template <int NO>
void run16(const uint16_t* xp, const uint16_t* wv, float* y, const Shape& s, int64_t n, int64_t yy, int64_t x0,
           int64_t og, int64_t valid) {
  const int64_t CB = s.C / 32, OB = s.O / 16;
  _tile_zero(0);
  if constexpr (NO > 1) _tile_zero(1);
  if constexpr (NO > 2) _tile_zero(2);
  if constexpr (NO > 3) _tile_zero(3);
  for (int64_t i = 0; i < s.k; ++i)
    for (int64_t j = 0; j < s.k; ++j) {
      const int64_t t = i * s.k + j;
      const uint16_t* a = xp + ((n * s.PH + yy + i) * s.PW + x0 + j) * s.C;
      for (int64_t cb = 0; cb < CB; ++cb) {
        _tile_loadd(4, a + cb * 32, s.C * 2);
        const uint16_t* b = wv + ((t * CB + cb) * OB + og * 4) * 512;
        _tile_loadd(5, b, 64);
        _tile_dpbf16ps(0, 4, 5);
        if constexpr (NO > 1) {
          _tile_loadd(6, b + 512, 64);
          _tile_dpbf16ps(1, 4, 6);
        }
        if constexpr (NO > 2) {
          _tile_loadd(5, b + 1024, 64);
          _tile_dpbf16ps(2, 4, 5);
        }
        if constexpr (NO > 3) {
          _tile_loadd(6, b + 1536, 64);
          _tile_dpbf16ps(3, 4, 6);
        }
      }
    }
  float* out = y + ((n * s.H + yy) * s.W + x0) * s.O + og * 64;
  if (valid == 16) {
    _tile_stored(0, out, s.O * 4);
    if constexpr (NO > 1) _tile_stored(1, out + 16, s.O * 4);
    if constexpr (NO > 2) _tile_stored(2, out + 32, s.O * 4);
    if constexpr (NO > 3) _tile_stored(3, out + 48, s.O * 4);
    return;
  }
  alignas(64) float buf[4][16 * 16];  // a row shorter than 16 pixels: only its valid rows leave the tiles
  _tile_stored(0, buf[0], 64);
  if constexpr (NO > 1) _tile_stored(1, buf[1], 64);
  if constexpr (NO > 2) _tile_stored(2, buf[2], 64);
  if constexpr (NO > 3) _tile_stored(3, buf[3], 64);
  for (int64_t r = 0; r < valid; ++r)
    for (int ob = 0; ob < NO; ++ob) std::memcpy(out + r * s.O + ob * 16, buf[ob] + r * 16, 64);
}

void rows(const uint16_t* xp, const uint16_t* wv, float* y, const Shape& s, int64_t r0, int64_t r1) {
  const int64_t OB = s.O / 16, groups = (OB + 3) / 4;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / s.H, yy = r % s.H;
    // runs of 16 pixels; the last one ends at the row's end (overlapping the one before: the same values)
    for (int64_t x0 = 0;; x0 += 16) {
      x0 = std::min(x0, std::max<int64_t>(0, s.W - 16));
      const int64_t valid = std::min<int64_t>(16, s.W);
      for (int64_t og = 0; og < groups; ++og) {
        switch (std::min<int64_t>(4, OB - og * 4)) {
          case 1: run16<1>(xp, wv, y, s, n, yy, x0, og, valid); break;
          case 2: run16<2>(xp, wv, y, s, n, yy, x0, og, valid); break;
          case 3: run16<3>(xp, wv, y, s, n, yy, x0, og, valid); break;
          default: run16<4>(xp, wv, y, s, n, yy, x0, og, valid); break;
        }
      }
      if (x0 + 16 >= s.W) break;
    }
  }
}

// A thread's tile configuration, as parallel_for's per-thread scratch: set before its first item, released after
// its last (the configuration is per thread).
struct Tiles {
  explicit Tiles(void (*configure)()) { configure(); }
  ~Tiles() { _tile_release(); }
  Tiles(const Tiles&) = delete;
  Tiles& operator=(const Tiles&) = delete;
};


// ---- kernel gradient: dw[i, j, c, o] = sum_{n, y, x} x[n, y+i-p, x+j-p, c] * dy[n, y, x, o] (zero outside) ----
// Per image, a GEMM per tap with the image's pixels as K, on the zero-padded image's flat grid (PW = W + 2p columns):
// output pixel r = y * PW + x meets input pixel r + i * PW + j, and dy is zero in the pad columns, so each tap's B
// operand is the padded image shifted by one offset. A = dy transposed on that grid ([O][Kb], Kb = H * PW rounded up
// to 32); B = the padded image in AMX's pair-interleaved layout, built twice (pairs from an even and from an odd
// pixel) for offsets of either parity. Both live in a per-thread buffer that stays in L2; there is no patch matrix.
// The images are split into G fixed groups summed in order, so the result does not depend on the thread count.

inline uint16_t bf16_of(float f) { return imgclass::to_bf16(f); }
inline uint16_t bf16_of(uint16_t b) { return b; }

struct GradShape {
  int64_t N, H, W, C, O, k, PW, Kb, XV;  // XV: pixel pairs in each interleaved buffer
};

template <typename T>
void build_dyt(const T* dy, uint16_t* dyt, const GradShape& s) {
  std::fill(dyt, dyt + s.O * s.Kb, uint16_t(0));
  for (int64_t y = 0; y < s.H; ++y)
    for (int64_t x0 = 0; x0 < s.W; x0 += 16) {  // 16 pixels x all outputs: a small transpose through L1
      const int64_t nx = std::min<int64_t>(16, s.W - x0);
      const T* src = dy + (y * s.W + x0) * s.O;
      for (int64_t o = 0; o < s.O; ++o) {
        uint16_t* dst = dyt + o * s.Kb + y * s.PW + x0;
        for (int64_t x = 0; x < nx; ++x) dst[x] = bf16_of(src[x * s.O + o]);
      }
    }
}

template <typename T>
void build_pairs(const T* img, uint16_t* xv0, uint16_t* xv1, const GradShape& s) {
  // xv_par[q * 2C + c * 2 + e] = padded pixel (2q + par + e), channel c
  const int64_t p = s.k / 2, C = s.C;
  std::fill(xv0, xv0 + s.XV * 2 * C, uint16_t(0));
  std::fill(xv1, xv1 + s.XV * 2 * C, uint16_t(0));
  for (int64_t y = 0; y < s.H; ++y)
    for (int64_t x = 0; x < s.W; ++x) {
      const int64_t r = (y + p) * s.PW + x + p;
      const T* src = img + (y * s.W + x) * C;
      uint16_t* d0 = xv0 + (r >> 1) * 2 * C + (r & 1);
      uint16_t* d1 = xv1 + ((r - 1) >> 1) * 2 * C + ((r - 1) & 1);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const uint16_t v = bf16_of(src[c]);
        d0[2 * c] = v;
        d1[2 * c] = v;
      }
    }
}

template <typename TX, typename TD>
void grad_images(const TX* x, const TD* dy, float* acc, const GradShape& s, int64_t n0, int64_t n1, uint16_t* dyt,
                 uint16_t* xv0, uint16_t* xv1) {
  const int64_t HW = s.H * s.W, OC = s.O * s.C, C2 = 2 * s.C;
  for (int64_t n = n0; n < n1; ++n) {
    build_dyt(dy + n * HW * s.O, dyt, s);
    build_pairs(x + n * HW * s.C, xv0, xv1, s);
    for (int64_t i = 0; i < s.k; ++i)
      for (int64_t j = 0; j < s.k; ++j) {
        const int64_t off = i * s.PW + j;
        // pairs from pixel kc + off: buffer of that parity, pair index (kc + off - parity) / 2
        const uint16_t* b = (off & 1) ? xv1 + ((off - 1) >> 1) * C2 : xv0 + (off >> 1) * C2;
        float* a = acc + (i * s.k + j) * OC;  // [O][C] for this tap
        for (int64_t ob = 0; ob < s.O; ob += 32)
          for (int64_t cb = 0; cb < s.C; cb += 32) {
            float* c00 = a + ob * s.C + cb;
            _tile_loadd(0, c00, s.C * 4);
            _tile_loadd(1, c00 + 16, s.C * 4);
            _tile_loadd(2, c00 + 16 * s.C, s.C * 4);
            _tile_loadd(3, c00 + 16 * s.C + 16, s.C * 4);
            for (int64_t kc = 0; kc < s.Kb; kc += 32) {
              _tile_loadd(4, dyt + ob * s.Kb + kc, s.Kb * 2);
              _tile_loadd(5, dyt + (ob + 16) * s.Kb + kc, s.Kb * 2);
              _tile_loadd(6, b + (kc >> 1) * C2 + cb * 2, C2 * 2);
              _tile_loadd(7, b + (kc >> 1) * C2 + (cb + 16) * 2, C2 * 2);
              _tile_dpbf16ps(0, 4, 6);
              _tile_dpbf16ps(1, 4, 7);
              _tile_dpbf16ps(2, 5, 6);
              _tile_dpbf16ps(3, 5, 7);
            }
            _tile_stored(0, c00, s.C * 4);
            _tile_stored(1, c00 + 16, s.C * 4);
            _tile_stored(2, c00 + 16 * s.C, s.C * 4);
            _tile_stored(3, c00 + 16 * s.C + 16, s.C * 4);
          }
      }
  }
}

void configure_grad() {  // 0-3: float32 16 x 16; 4, 5: A (dy^T) 16 x 32 bf16; 6, 7: B pairs 16 x (16 x 2)
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}
}  // namespace
#endif

static ffi::Error AmxConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> xp, ffi::Buffer<ffi::BF16> wv,
                              ffi::ResultBuffer<ffi::F32> y, int64_t k) {
#ifdef IMGCLASS_AMX
  if (!ImgclassAmxReady()) return ffi::Error::Internal("amx_conv: the CPU or Linux grants no AMX tiles");
  auto xd = xp.dimensions();
  auto yd = y->dimensions();
  Shape s{yd[0], yd[1], yd[2], xd[3], yd[3], xd[1], xd[2], k};
  if (s.C % 32 || s.O % 16 || s.PH != s.H + k - 1 || s.PW < std::max<int64_t>(s.W, 16) + k - 1)
    return ffi::Error::InvalidArgument("amx_conv: C % 32, O % 16 or the padding is wrong");
  const uint16_t* x = xp.typed_data();
  const uint16_t* w = wv.typed_data();
  float* out = y->typed_data();
  const int64_t R = s.N * s.H;
  const int64_t chunk = std::max<int64_t>(1, R / (8 * std::max<int64_t>(1, pool.num_threads())));
  imgclass::parallel_for(pool, (R + chunk - 1) / chunk, [] { return Tiles(configure); },
                         [&](Tiles&, int64_t q) { rows(x, w, out, s, q * chunk, std::min(R, (q + 1) * chunk)); });
  return ffi::Error::Success();
#else
  return ffi::Error::Internal("amx_conv: built without AMX");
#endif
}

static ffi::Error AmxConvKernelGradImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                                        ffi::ResultBuffer<ffi::F32> dw) {
#ifdef IMGCLASS_AMX
  if (!ImgclassAmxReady()) return ffi::Error::Internal("amx_conv: the CPU or Linux grants no AMX tiles");
  auto xd = x.dimensions();
  auto dd = dy.dimensions();
  auto wd = dw->dimensions();
  GradShape s{xd[0], xd[1], xd[2], xd[3], dd[3], wd[0], 0, 0, 0};
  s.PW = s.W + 2 * (s.k / 2);
  s.Kb = (s.H * s.PW + 31) / 32 * 32;
  // the last pair read: (Kb - 1 + the largest offset) / 2, plus one
  s.XV = (s.Kb + (s.k - 1) * (s.PW + 1)) / 2 + 1;
  if (s.C % 32 || s.O % 32 || dd[1] != s.H || dd[2] != s.W || wd[2] != s.C || wd[3] != s.O)
    return ffi::Error::InvalidArgument("amx_conv_kernel_grad: C % 32, O % 32 or the shapes are wrong");
  const auto xt = x.element_type(), dt = dy.element_type();
  const bool xf = xt == ffi::F32, df = dt == ffi::F32;
  if ((!xf && xt != ffi::BF16) || (!df && dt != ffi::BF16))
    return ffi::Error::InvalidArgument("amx_conv_kernel_grad: float32 or bfloat16 only");
  const int64_t G = std::min<int64_t>(8, s.N), per = s.k * s.k * s.O * s.C;
  std::vector<float> partial(G * per, 0.0f);
  const void* xp = x.untyped_data();
  const void* dp = dy.untyped_data();
  float* acc = partial.data();
  struct Scratch {  // per thread: the tiles and the operand buffers that stay in L2
    Tiles tiles;
    std::unique_ptr<uint16_t[]> dyt, xv;
  };
  auto scratch = [s] {
    return Scratch{Tiles(configure_grad), std::unique_ptr<uint16_t[]>(new uint16_t[s.O * s.Kb]),
                   std::unique_ptr<uint16_t[]>(new uint16_t[2 * s.XV * 2 * s.C])};
  };
  // One group of images an item, each summed into its own slice of `partial`.
  imgclass::parallel_for(pool, G, scratch, [&](Scratch& t, int64_t g) {
    uint16_t* dyt = t.dyt.get();
    uint16_t* xv0 = t.xv.get();
    uint16_t* xv1 = xv0 + s.XV * 2 * s.C;
    const int64_t n0 = g * s.N / G, n1 = (g + 1) * s.N / G;
    float* a = acc + g * per;
    if (xf && df)
      grad_images(static_cast<const float*>(xp), static_cast<const float*>(dp), a, s, n0, n1, dyt, xv0, xv1);
    else if (xf)
      grad_images(static_cast<const float*>(xp), static_cast<const uint16_t*>(dp), a, s, n0, n1, dyt, xv0, xv1);
    else if (df)
      grad_images(static_cast<const uint16_t*>(xp), static_cast<const float*>(dp), a, s, n0, n1, dyt, xv0, xv1);
    else
      grad_images(static_cast<const uint16_t*>(xp), static_cast<const uint16_t*>(dp), a, s, n0, n1, dyt, xv0, xv1);
  });
  // the groups in order, each tap's [O][C] transposed into dw[i, j, c, o]
  float* out = dw->typed_data();
  for (int64_t t = 0; t < s.k * s.k; ++t)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t o = 0; o < s.O; ++o) {
        float v = 0.0f;
        for (int64_t g = 0; g < G; ++g) v += acc[g * per + (t * s.O + o) * s.C + c];
        out[(t * s.C + c) * s.O + o] = v;
      }
  return ffi::Error::Success();
#else
  return ffi::Error::Internal("amx_conv: built without AMX");
#endif
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(AmxConvKernelGrad, AmxConvKernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(AmxConv, AmxConvImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("k"));
