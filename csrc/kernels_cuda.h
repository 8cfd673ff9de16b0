// Launchers of the CUDA kernels. They take raw device pointers, sizes and the stream to launch
// on, and return the launch status; they include no torch headers, so the .cu sources compile
// quickly and against any torch install (the compile check in tests/test_native.py relies on
// that). bindings.cpp allocates the outputs, holds the device guard and turns errors into
// Python exceptions. Layouts are the ones documented in native.h.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace cryorestore {
namespace cuda {

// out: float64 (B, 3, n), zero on entry; f1/f2: interleaved complex (B, vol) with vol = Z·Y·Xr.
cudaError_t fsc_shells_f32(const float* f1, const float* f2, const int32_t* shells, int64_t B, int64_t vol,
                           int64_t Xr, int64_t n, bool nyquist_once, int sm_count, double* out, cudaStream_t stream);
cudaError_t fsc_shells_f64(const double* f1, const double* f2, const int32_t* shells, int64_t B, int64_t vol,
                           int64_t Xr, int64_t n, bool nyquist_once, int sm_count, double* out, cudaStream_t stream);

// out: float32 (R, Z, Y, Xr); rotations: float64 (R, 3, 3).
cudaError_t wedge_mask(const double* kz, const double* ky, const double* kx, int64_t Z, int64_t Y, int64_t Xr,
                       const double* rotations, int64_t R, double lo, double hi, double tiny, float* out,
                       cudaStream_t stream);
// spectra: interleaved complex (B, Z, Y, Xr), multiplied in place by mask b % R.
cudaError_t apply_wedge_f32(float* spectra, int64_t B, const double* kz, const double* ky, const double* kx,
                            int64_t Z, int64_t Y, int64_t Xr, const double* rotations, int64_t R, double lo,
                            double hi, double tiny, cudaStream_t stream);
cudaError_t apply_wedge_f64(double* spectra, int64_t B, const double* kz, const double* ky, const double* kx,
                            int64_t Z, int64_t Y, int64_t Xr, const double* rotations, int64_t R, double lo,
                            double hi, double tiny, cudaStream_t stream);

// num, den: float32 (Z, Y, X), zero on entry; num becomes the blended volume.
cudaError_t blend_tiles(const float* tiles, const int64_t* origins, const float* window, int64_t T, int64_t d,
                        int64_t h, int64_t w, int64_t Z, int64_t Y, int64_t X, float* num, float* den,
                        cudaStream_t stream);

}  // namespace cuda
}  // namespace cryorestore
