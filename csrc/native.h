// cryorestore native kernels: declarations of the CPU implementations (C++, at::parallel_for on
// the OpenMP backend) shared with the bindings.
//
// Conventions (see python/cryorestore/fourier.py and docs/architecture.md): volumes are (z, y, x); spectra
// are torch.fft.rfftn half-spaces (B, Z, Y, Xr) with Xr = X/2 + 1; frequencies in cycles/voxel.
// The bindings validate shapes, dtypes and devices and make every input contiguous, so the
// implementations below may assume dense row-major buffers on one device. The CUDA launchers
// (same layouts, raw pointers) are declared in kernels_cuda.h.
#pragma once

#include <ATen/ATen.h>

namespace cryorestore {

// ---- FSC shell sums ------------------------------------------------------------------------
// f1, f2: complex64 or complex128 (B, Z, Y, Xr); shells: int32 (Z, Y, Xr) with values in
// [0, n] (n = excluded); nyquist_once: the last x plane is a Nyquist plane (even real-space X).
// Returns float64 (B, 3, n): Re Σ w F1·conj F2, Σ w |F1|², Σ w |F2|², w = 1 on the x = 0 plane
// (and the Nyquist plane), 2 elsewhere.
// Each CPU entry point writes every element of `out` (allocated and checked by the bindings).
void fsc_shells_cpu(const at::Tensor& f1, const at::Tensor& f2, const at::Tensor& shells, int64_t n,
                    bool nyquist_once, at::Tensor& out);

// ---- missing-wedge masks ---------------------------------------------------------------------
// kz (Z), ky (Y), kx (Xr): float64 frequencies of the rfft grid; rotations: float64 (R, 3, 3)
// matrices on (z, y, x) vectors; lo/hi: the accepted fold angle range in degrees (eps included);
// tiny: |k'| below it counts as exactly 0. wedge_mask returns float32 (R, Z, Y, Xr);
// apply_wedge multiplies a complex (B, Z, Y, Xr) batch in place with mask b % R.
void wedge_mask_cpu(const at::Tensor& kz, const at::Tensor& ky, const at::Tensor& kx,
                    const at::Tensor& rotations, double lo, double hi, double tiny, at::Tensor& out);
void apply_wedge_cpu(at::Tensor& spectra, const at::Tensor& kz, const at::Tensor& ky, const at::Tensor& kx,
                     const at::Tensor& rotations, double lo, double hi, double tiny);

// ---- overlap-add blending ------------------------------------------------------------------
// tiles: float32 (T, d, h, w); origins: int64 (T, 3) (z, y, x), every tile inside the output;
// window: float32 (d, h, w). Returns float32 (Z, Y, X) = Σ window·tile / Σ window, 0 where no
// tile reaches.
void blend_tiles_cpu(const at::Tensor& tiles, const at::Tensor& origins, const at::Tensor& window,
                     at::Tensor& out);

}  // namespace cryorestore
