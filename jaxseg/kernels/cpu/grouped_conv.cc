// Grouped 2-D convolution for XLA:CPU (NHWC input, packed per-group weights), as an XLA FFI
// handler. XLA:CPU runs ResNeXt's grouped 3x3 convs (4-32 channels per group) as many tiny
// GEMMs at a few GFLOP/s; this is a register-tiled direct convolution: a tile of P output
// pixels x V vectors of 8 output channels stays in registers while the kernel taps and the
// group's input channels stream past (one broadcast input value feeds V multiply-adds).
//
// Inputs:  x  (N, H, W, C) float32, C = groups * cin_per_group
//          w  (groups, chunks, KH, KW, cin_per_group, lanes) float32, lanes 8 or 16: the group's
//             outputs, zero-padded to chunks * lanes, in chunks that a tile keeps in registers
//             (each chunk's taps contiguous, so a tile's weights fill whole cache lines)
// Output:  y  (N, Ho, Wo, groups * out_per_group) float32
// Attributes: stride_h/w, pad_h/w (symmetric zero padding), dilation_h/w, out_per_group.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

typedef float v8 __attribute__((vector_size(32)));

struct Geometry {
  int64_t n, h, w, c, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t groups, cin_g, out_g;  // out_g: outputs stored per group
  int64_t chunks, chunk_lanes;   // packed outputs per group: chunks x chunk_lanes (8 or 16)
  // Output columns whose taps all read inside the input: [col_lo, col_hi).
  int64_t col_lo, col_hi;
  int64_t cout() const { return groups * out_g; }
};

inline v8 LoadV8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// One tile: P output pixels of row `ho` starting at column `wo0`, the V * 8 output channels of
// group `g` starting at `lane0`, whose weights are `w_chunk`. `checked`: columns may touch the
// padding.
template <int P, int V, bool checked>
void Tile(const Geometry& gm, const float* x_img, const float* w_chunk, float* y_row, int64_t ho,
          int64_t wo0, int64_t g, int64_t lane0) {
  v8 acc[P][V];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) acc[p][v] = v8{};
  const int64_t pix_step = gm.sw * gm.c;
  for (int64_t ki = 0; ki < gm.kh; ++ki) {
    const int64_t hi = ho * gm.sh - gm.ph + ki * gm.dh;
    if (hi < 0 || hi >= gm.h) continue;
    const float* x_row = x_img + hi * gm.w * gm.c + g * gm.cin_g;
    for (int64_t kj = 0; kj < gm.kw; ++kj) {
      const int64_t wi0 = wo0 * gm.sw - gm.pw + kj * gm.dw;
      const float* w_tap = w_chunk + (ki * gm.kw + kj) * gm.cin_g * V * 8;
      if (!checked) {
        const float* x_pix = x_row + wi0 * gm.c;
        for (int64_t i = 0; i < gm.cin_g; ++i) {
          v8 wv[V];
          for (int v = 0; v < V; ++v) wv[v] = LoadV8(w_tap + (i * V + v) * 8);
          for (int p = 0; p < P; ++p) {
            const float xs = x_pix[p * pix_step + i];
            for (int v = 0; v < V; ++v) acc[p][v] += xs * wv[v];
          }
        }
      } else {
        for (int p = 0; p < P; ++p) {
          const int64_t wi = wi0 + p * gm.sw;
          if (wi < 0 || wi >= gm.w) continue;
          const float* x_pix = x_row + wi * gm.c;
          for (int64_t i = 0; i < gm.cin_g; ++i) {
            const float xs = x_pix[i];
            for (int v = 0; v < V; ++v) acc[p][v] += xs * LoadV8(w_tap + (i * V + v) * 8);
          }
        }
      }
    }
  }
  const int64_t cout = gm.cout();
  for (int p = 0; p < P; ++p) {
    float* y_pix = y_row + (wo0 + p) * cout + g * gm.out_g;
    for (int v = 0; v < V; ++v) {
      const int64_t first = lane0 + v * 8;
      const int64_t lanes = std::min<int64_t>(8, gm.out_g - first);
      if (lanes == 8) {
        std::memcpy(y_pix + first, &acc[p][v], sizeof(v8));
      } else {
        for (int64_t l = 0; l < lanes; ++l) y_pix[first + l] = acc[p][v][l];
      }
    }
  }
}

// Output row `ho`: the V * 8 channels of group g from `lane0` (weights `w_chunk`).
template <int V>
void RowChunk(const Geometry& gm, const float* x_img, const float* w_chunk, float* y_row,
              int64_t ho, int64_t g, int64_t lane0) {
  constexpr int P = V == 1 ? 12 : 6;  // 12 accumulators + V weights + 1 broadcast <= 16 ymm
  int64_t wo = 0;
  for (; wo < gm.col_lo; ++wo) Tile<1, V, true>(gm, x_img, w_chunk, y_row, ho, wo, g, lane0);
  for (; wo + P <= gm.col_hi; wo += P) {
    Tile<P, V, false>(gm, x_img, w_chunk, y_row, ho, wo, g, lane0);
  }
  for (; wo < gm.col_hi; ++wo) Tile<1, V, false>(gm, x_img, w_chunk, y_row, ho, wo, g, lane0);
  for (; wo < gm.wo; ++wo) Tile<1, V, true>(gm, x_img, w_chunk, y_row, ho, wo, g, lane0);
}

void ComputeRow(const Geometry& gm, const float* x, const float* w, float* y, int64_t row) {
  const int64_t n = row / gm.ho, ho = row % gm.ho;
  const float* x_img = x + n * gm.h * gm.w * gm.c;
  float* y_row = y + (n * gm.ho + ho) * gm.wo * gm.cout();
  const int64_t chunk_size = gm.kh * gm.kw * gm.cin_g * gm.chunk_lanes;
  for (int64_t g = 0; g < gm.groups; ++g) {
    for (int64_t k = 0; k < gm.chunks; ++k) {
      const float* w_chunk = w + (g * gm.chunks + k) * chunk_size;
      if (gm.chunk_lanes == 16) {
        RowChunk<2>(gm, x_img, w_chunk, y_row, ho, g, k * 16);
      } else {
        RowChunk<1>(gm, x_img, w_chunk, y_row, ho, g, k * 8);
      }
    }
  }
}

// Rows are claimed from a shared counter by the calling thread and by helpers scheduled on
// XLA's intra-op pool. The caller never waits for a helper that has not started: helpers that
// start after the work is closed return at once, so a busy pool cannot deadlock the call.
struct RowQueue {
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::condition_variable cv;
  int active = 0;
  bool closed = false;
};

void Drain(RowQueue& q, int64_t rows, const Geometry& gm, const float* x, const float* w,
           float* y) {
  for (int64_t r = q.next.fetch_add(1); r < rows; r = q.next.fetch_add(1)) {
    ComputeRow(gm, x, w, y, r);
  }
}

ffi::Error GroupedConv(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> y, int64_t stride_h, int64_t stride_w,
                       int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                       int64_t out_per_group) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  const auto yd = y->dimensions();
  if (xd.size() != 4 || wd.size() != 6 || yd.size() != 4) {
    return ffi::Error::InvalidArgument(
        "grouped_conv: expected x (N,H,W,C), w (G,chunks,KH,KW,Cg,lanes), y (N,Ho,Wo,Co)");
  }
  Geometry gm;
  gm.n = xd[0], gm.h = xd[1], gm.w = xd[2], gm.c = xd[3];
  gm.groups = wd[0], gm.chunks = wd[1], gm.kh = wd[2], gm.kw = wd[3], gm.cin_g = wd[4];
  gm.chunk_lanes = wd[5];
  gm.ho = yd[1], gm.wo = yd[2];
  gm.sh = stride_h, gm.sw = stride_w, gm.ph = pad_h, gm.pw = pad_w;
  gm.dh = dilation_h, gm.dw = dilation_w, gm.out_g = out_per_group;
  if (gm.groups * gm.cin_g != gm.c || (gm.chunk_lanes != 8 && gm.chunk_lanes != 16) ||
      gm.out_g > gm.chunks * gm.chunk_lanes || gm.out_g <= 0 || yd[0] != gm.n ||
      yd[3] != gm.cout()) {
    return ffi::Error::InvalidArgument("grouped_conv: inconsistent input/weight/output shapes");
  }
  // Columns wo with 0 <= wo*sw - pw and wo*sw - pw + (kw-1)*dw < W.
  gm.col_lo = std::min(gm.wo, (gm.pw + gm.sw - 1) / gm.sw);
  const int64_t last = gm.w - 1 + gm.pw - (gm.kw - 1) * gm.dw;  // wo*sw <= last
  gm.col_hi = last < 0 ? gm.col_lo : std::max(gm.col_lo, std::min(gm.wo, last / gm.sw + 1));

  const int64_t rows = gm.n * gm.ho;
  auto queue = std::make_shared<RowQueue>();
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), rows) - 1;
  for (int64_t t = 0; t < helpers; ++t) {
    pool.Schedule([queue, rows, gm, xp, wp, yp] {
      {
        std::lock_guard<std::mutex> lock(queue->mu);
        if (queue->closed) return;
        ++queue->active;
      }
      Drain(*queue, rows, gm, xp, wp, yp);
      std::lock_guard<std::mutex> lock(queue->mu);
      if (--queue->active == 0) queue->cv.notify_all();
    });
  }
  Drain(*queue, rows, gm, xp, wp, yp);
  std::unique_lock<std::mutex> lock(queue->mu);
  queue->closed = true;
  queue->cv.wait(lock, [&] { return queue->active == 0; });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxsegGroupedConv, GroupedConv,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("pad_h")
                                  .Attr<int64_t>("pad_w")
                                  .Attr<int64_t>("dilation_h")
                                  .Attr<int64_t>("dilation_w")
                                  .Attr<int64_t>("out_per_group"));
