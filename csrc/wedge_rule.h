// The missing-wedge rule of python/cryorestore/fourier.py (wedge_mask_from_frequencies and the
// rotated branch of missing_wedge_mask), evaluated per coefficient in double precision with the
// same operation order and no fused multiply-adds, so that masks match the torch twin bit for bit.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define CR_HD __host__ __device__ __forceinline__
#else
#define CR_HD inline
#endif

namespace cryorestore {

// torch.rad2deg multiplies by this constant (aten UnaryOps).
constexpr double kRadToDeg = 57.295779513082320876798154814105170332405472466564;

// Rounded multiply/add that never contract into an FMA (torch evaluates a*b + c*d + e*f as three
// separately rounded products and two separately rounded sums). The host build uses
// -ffp-contract=off; the device uses the explicit round-to-nearest intrinsics.
CR_HD double rmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
CR_HD double radd(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// 1 if the coefficient at frequency k = (kz, ky, kx) of a volume rotated actively by R (row-major
// 3x3 on (z, y, x) vectors) was measured by tilts with fold angle in [lo, hi] degrees, else 0.
// k' = Rᵀ k; only k'_z and k'_x matter (the tilt axis is y).
CR_HD float wedge_value(double kz, double ky, double kx, const double* R, double lo, double hi, double tiny) {
  double kzr = radd(radd(rmul(R[0], kz), rmul(R[3], ky)), rmul(R[6], kx));
  double kxr = radd(radd(rmul(R[2], kz), rmul(R[5], ky)), rmul(R[8], kx));
  if (fabs(kzr) < tiny) kzr = 0.0;
  if (fabs(kxr) < tiny) kxr = 0.0;
  double phi = rmul(atan2(kzr, kxr), kRadToDeg);
  if (phi > 90.0) phi = phi - 180.0;
  if (phi <= -90.0) phi = phi + 180.0;
  const bool measured = (phi >= lo) && (phi <= hi);
  const bool on_axis = (kzr == 0.0) && (kxr == 0.0);
  return (measured || on_axis) ? 1.0f : 0.0f;
}

}  // namespace cryorestore
