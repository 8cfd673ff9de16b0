// Overlap-add blending on the GPU in two kernels: (1) one thread per tile voxel adds window·tile
// and window into float32 numerator/weight volumes with atomics; (2) one thread per output voxel
// divides in place (0 where no weight), writing every output element. Atomic float adds make the
// summation order (and so the last bits) nondeterministic; results match the twin to ~1e-6.
#include <algorithm>
#include <cfloat>

#include "kernels_cuda.h"

namespace cryorestore {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void scatter_kernel(const float* __restrict__ tiles, const int64_t* __restrict__ origins,
                               const float* __restrict__ window, int64_t d, int64_t h, int64_t w, int64_t Y,
                               int64_t X, float* __restrict__ num, float* __restrict__ den) {
  const int64_t t = blockIdx.y;
  const int64_t per_tile = d * h * w;
  const int64_t z0 = origins[3 * t], y0 = origins[3 * t + 1], x0 = origins[3 * t + 2];
  const float* src = tiles + t * per_tile;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < per_tile;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t x = i % w, y = (i / w) % h, z = i / (w * h);
    const int64_t o = ((z0 + z) * Y + (y0 + y)) * X + (x0 + x);
    const float wv = window[i];
    atomicAdd(&num[o], __fmul_rn(wv, src[i]));
    atomicAdd(&den[o], wv);
  }
}

__global__ void normalise_kernel(float* __restrict__ num, const float* __restrict__ den, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const float wv = den[i];
    num[i] = wv > 0.0f ? num[i] / fmaxf(wv, FLT_MIN) : 0.0f;
  }
}

}  // namespace

cudaError_t blend_tiles(const float* tiles, const int64_t* origins, const float* window, int64_t T, int64_t d,
                        int64_t h, int64_t w, int64_t Z, int64_t Y, int64_t X, float* num, float* den,
                        cudaStream_t stream) {
  const int64_t per_tile = d * h * w;
  if (T > 0 && per_tile > 0) {
    const int64_t blocks = std::min<int64_t>((per_tile + kThreads - 1) / kThreads, 65535);
    for (int64_t t0 = 0; t0 < T; t0 += 65535) {  // grid.y holds at most 65535 tiles per launch
      const int64_t nt = std::min<int64_t>(65535, T - t0);
      scatter_kernel<<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(nt)), kThreads, 0, stream>>>(
          tiles + t0 * per_tile, origins + 3 * t0, window, d, h, w, Y, X, num, den);
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
  }
  const int64_t total = Z * Y * X;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, 65535 * 16);
  normalise_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(num, den, total);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace cryorestore
