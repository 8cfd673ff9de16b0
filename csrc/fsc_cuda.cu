// FSC shell sums on the GPU: one launch for all pairs of a batch.
//
// Grid (blocks_per_pair, B). Each block keeps a per-block partial histogram in shared memory
// (3 float64 sums per shell plus a spare bin for excluded coefficients), fills it with shared
// atomics over a grid-stride range of its pair's coefficients, then adds it to the global
// (B, 3, n) result with one global atomic per bin. When the histogram does not fit in 48 KiB of
// shared memory (n > ~2000 shells) the kernel falls back to global atomics.
//
// How to measure it on a GPU machine (none was available when this was written): build on the
// GPU host with `python -m cryorestore.native --build`, then run
// `python benchmarks/bench_native.py --device cuda`, which times this kernel against the torch twin
// (scatter_add) with torch.cuda.synchronize() around every repeat (median of repeats, warm-up
// excluded); `nsys profile --stats=true` or `ncu --set full` on one launch shows the achieved
// bandwidth. The kernel should be memory bound (two complex reads and one int32 per
// coefficient), so compare its GB/s with the device's peak.
#include <algorithm>

#include "kernels_cuda.h"

namespace cryorestore {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename real_t, bool kShared>
__global__ void fsc_shells_kernel(const real_t* __restrict__ f1, const real_t* __restrict__ f2,
                                  const int32_t* __restrict__ shells, int64_t vol, int64_t Xr, int64_t x_once_last,
                                  int64_t n, double* __restrict__ out) {
  extern __shared__ double hist[];  // 3 * (n + 1) doubles when kShared
  const int64_t b = blockIdx.y;
  if (kShared) {
    for (int64_t i = threadIdx.x; i < 3 * (n + 1); i += blockDim.x) hist[i] = 0.0;
    __syncthreads();
  }
  const real_t* a = f1 + 2 * b * vol;
  const real_t* c = f2 + 2 * b * vol;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < vol; i += (int64_t)gridDim.x * blockDim.x) {
    const int32_t s = shells[i];
    if (s < 0 || s >= n) continue;
    const int64_t x = i % Xr;
    const double w = (x == 0 || x == x_once_last) ? 1.0 : 2.0;
    const double ar = a[2 * i], ai = a[2 * i + 1], br = c[2 * i], bi = c[2 * i + 1];
    const double num = w * (ar * br + ai * bi), p1 = w * (ar * ar + ai * ai), p2 = w * (br * br + bi * bi);
    if (kShared) {
      atomicAdd(&hist[3 * s], num);
      atomicAdd(&hist[3 * s + 1], p1);
      atomicAdd(&hist[3 * s + 2], p2);
    } else {
      atomicAdd(&out[(b * 3 + 0) * n + s], num);
      atomicAdd(&out[(b * 3 + 1) * n + s], p1);
      atomicAdd(&out[(b * 3 + 2) * n + s], p2);
    }
  }
  if (kShared) {
    __syncthreads();
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      atomicAdd(&out[(b * 3 + 0) * n + k], hist[3 * k]);
      atomicAdd(&out[(b * 3 + 1) * n + k], hist[3 * k + 1]);
      atomicAdd(&out[(b * 3 + 2) * n + k], hist[3 * k + 2]);
    }
  }
}

template <typename real_t>
cudaError_t launch(const real_t* f1, const real_t* f2, const int32_t* shells, int64_t B, int64_t vol, int64_t Xr,
                   int64_t n, bool nyquist_once, int sm_count, double* out, cudaStream_t stream) {
  if (B == 0 || vol == 0) return cudaSuccess;
  // the once-counted last plane; -1 (never matched) when X is odd or there is only x = 0
  const int64_t x_once_last = (nyquist_once && Xr > 1) ? Xr - 1 : -1;
  // enough blocks to fill the device ~4 times over, but at least ~8 coefficients per thread
  int64_t per_pair = (4 * static_cast<int64_t>(std::max(sm_count, 1)) + B - 1) / B;
  per_pair = std::max<int64_t>(1, std::min<int64_t>(per_pair, (vol + 8 * kThreads - 1) / (8 * kThreads)));
  const dim3 grid(static_cast<unsigned>(per_pair), static_cast<unsigned>(B));
  const size_t shmem = static_cast<size_t>(3 * (n + 1)) * sizeof(double);
  if (shmem <= 48 * 1024) {
    fsc_shells_kernel<real_t, true><<<grid, kThreads, shmem, stream>>>(f1, f2, shells, vol, Xr, x_once_last, n, out);
  } else {
    fsc_shells_kernel<real_t, false><<<grid, kThreads, 0, stream>>>(f1, f2, shells, vol, Xr, x_once_last, n, out);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t fsc_shells_f32(const float* f1, const float* f2, const int32_t* shells, int64_t B, int64_t vol,
                           int64_t Xr, int64_t n, bool nyquist_once, int sm_count, double* out, cudaStream_t stream) {
  return launch<float>(f1, f2, shells, B, vol, Xr, n, nyquist_once, sm_count, out, stream);
}

cudaError_t fsc_shells_f64(const double* f1, const double* f2, const int32_t* shells, int64_t B, int64_t vol,
                           int64_t Xr, int64_t n, bool nyquist_once, int sm_count, double* out, cudaStream_t stream) {
  return launch<double>(f1, f2, shells, B, vol, Xr, n, nyquist_once, sm_count, out, stream);
}

}  // namespace cuda
}  // namespace cryorestore
