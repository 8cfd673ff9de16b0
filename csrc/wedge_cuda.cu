// Missing-wedge masks on the GPU: one thread per coefficient of the (R or B, Z, Y, Xr) batch,
// the rule evaluated in double precision as on the CPU (wedge_rule.h: a margin-guarded fast test, the
// exact atan2 rule near the bounds; explicit
// round-to-nearest multiplies/adds so nothing contracts into an FMA).
#include <algorithm>

#include "kernels_cuda.h"
#include "wedge_rule.h"

namespace cryorestore {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float mask_at(int64_t i, const double* kz, const double* ky, const double* kx,
                                         const double* R, int64_t Y, int64_t Xr, const WedgeBounds& wb) {
  const int64_t x = i % Xr;
  const int64_t y = (i / Xr) % Y;
  const int64_t z = i / (Xr * Y);
  return wedge_value(kz[z], ky[y], kx[x], R, wb);
}

__global__ void wedge_mask_kernel(float* __restrict__ out, const double* __restrict__ kz,
                                  const double* __restrict__ ky, const double* __restrict__ kx,
                                  const double* __restrict__ rot, int64_t vol, int64_t Y, int64_t Xr,
                                  WedgeBounds wb) {
  const int64_t b = blockIdx.y;
  const double* R = rot + 9 * b;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < vol; i += (int64_t)gridDim.x * blockDim.x)
    out[b * vol + i] = mask_at(i, kz, ky, kx, R, Y, Xr, wb);
}

template <typename real_t>
__global__ void apply_wedge_kernel(real_t* __restrict__ spec, const double* __restrict__ kz,
                                   const double* __restrict__ ky, const double* __restrict__ kx,
                                   const double* __restrict__ rot, int64_t n_rot, int64_t vol, int64_t Y, int64_t Xr,
                                   WedgeBounds wb) {
  const int64_t b = blockIdx.y;
  const double* R = rot + 9 * (b % n_rot);
  real_t* s = spec + 2 * b * vol;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < vol; i += (int64_t)gridDim.x * blockDim.x) {
    const real_t m = static_cast<real_t>(mask_at(i, kz, ky, kx, R, Y, Xr, wb));
    s[2 * i] *= m;
    s[2 * i + 1] *= m;
  }
}

dim3 grid_for(int64_t vol, int64_t batch) {
  const int64_t blocks = std::min<int64_t>((vol + kThreads - 1) / kThreads, 65535);
  return dim3(static_cast<unsigned>(std::max<int64_t>(blocks, 1)), static_cast<unsigned>(batch));
}

template <typename real_t>
cudaError_t launch_apply(real_t* spectra, int64_t B, const double* kz, const double* ky, const double* kx, int64_t Z,
                         int64_t Y, int64_t Xr, const double* rot, int64_t R, double lo, double hi, double tiny,
                         cudaStream_t stream) {
  const int64_t vol = Z * Y * Xr;
  if (B == 0 || vol == 0) return cudaSuccess;
  apply_wedge_kernel<real_t><<<grid_for(vol, B), kThreads, 0, stream>>>(spectra, kz, ky, kx, rot, R, vol, Y, Xr,
                                                                         make_bounds(lo, hi, tiny));
  return cudaGetLastError();
}

}  // namespace

cudaError_t wedge_mask(const double* kz, const double* ky, const double* kx, int64_t Z, int64_t Y, int64_t Xr,
                       const double* rotations, int64_t R, double lo, double hi, double tiny, float* out,
                       cudaStream_t stream) {
  const int64_t vol = Z * Y * Xr;
  if (R == 0 || vol == 0) return cudaSuccess;
  wedge_mask_kernel<<<grid_for(vol, R), kThreads, 0, stream>>>(out, kz, ky, kx, rotations, vol, Y, Xr,
                                                               make_bounds(lo, hi, tiny));
  return cudaGetLastError();
}

cudaError_t apply_wedge_f32(float* spectra, int64_t B, const double* kz, const double* ky, const double* kx,
                            int64_t Z, int64_t Y, int64_t Xr, const double* rotations, int64_t R, double lo,
                            double hi, double tiny, cudaStream_t stream) {
  return launch_apply<float>(spectra, B, kz, ky, kx, Z, Y, Xr, rotations, R, lo, hi, tiny, stream);
}

cudaError_t apply_wedge_f64(double* spectra, int64_t B, const double* kz, const double* ky, const double* kx,
                            int64_t Z, int64_t Y, int64_t Xr, const double* rotations, int64_t R, double lo,
                            double hi, double tiny, cudaStream_t stream) {
  return launch_apply<double>(spectra, B, kz, ky, kx, Z, Y, Xr, rotations, R, lo, hi, tiny, stream);
}

}  // namespace cuda
}  // namespace cryorestore
