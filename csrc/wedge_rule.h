// The missing-wedge rule of python/cryorestore/fourier.py (wedge_mask_from_frequencies and the
// rotated branch of missing_wedge_mask), evaluated per coefficient in double precision. The
// rotated frequencies are computed with the twin's operation order and no fused multiply-adds;
// a cheap sign test decides every coefficient that is clearly inside or outside the tilt range,
// and the twin's atan2 computation decides the rest, so masks match the torch twin bit for bit.
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

// Tilt-range bounds prepared once per call for the fast test in wedge_value: the fold angle phi
// of the twin lies in (-90, 90], so a bound at or beyond ±90° never rejects; otherwise the sign
// of sin(phi - lo) (resp. sin(hi - phi)) decides, computed from the bound's cos/sin.
struct WedgeBounds {
  double lo, hi, tiny;        // degrees (eps included), as the twin compares them
  bool check_lo, check_hi;    // lo > -90 / hi < 90
  double cos_lo, sin_lo, cos_hi, sin_hi;
};

inline WedgeBounds make_bounds(double lo, double hi, double tiny) {
  const double rad = 3.14159265358979323846 / 180.0;
  return {lo, hi, tiny, lo > -90.0, hi < 90.0, std::cos(lo * rad), std::sin(lo * rad), std::cos(hi * rad),
          std::sin(hi * rad)};
}

// Relative margin of the fast test: the twin's phi carries rounding errors of ~1e-14 degrees,
// far below this, so wherever the fast test is that sure of a side it agrees with the twin; at
// most a few coefficients per call sit closer to a bound and take the exact (atan2) path.
constexpr double kFastMargin = 1e-9;

// The twin's rule on rotated frequencies (k'_z, k'_x), evaluated exactly as torch does it.
CR_HD float wedge_exact(double kzr, double kxr, double lo, double hi) {
  double phi = rmul(atan2(kzr, kxr), kRadToDeg);
  if (phi > 90.0) phi = phi - 180.0;
  if (phi <= -90.0) phi = phi + 180.0;
  const bool measured = (phi >= lo) && (phi <= hi);
  const bool on_axis = (kzr == 0.0) && (kxr == 0.0);
  return (measured || on_axis) ? 1.0f : 0.0f;
}

// 1 if the coefficient at frequency k = (kz, ky, kx) of a volume rotated actively by R (row-major
// 3x3 on (z, y, x) vectors) was measured by tilts with fold angle in [lo, hi] degrees, else 0.
// k' = Rᵀ k (computed as the twin does); only k'_z and k'_x matter (the tilt axis is y).
// The line through (k'_x, k'_z) is turned to k'_x > 0, where phi = atan(k'_z / k'_x) and
// phi >= lo  <=>  k'_z cos(lo) - k'_x sin(lo) >= 0  (and likewise for hi); when either value is
// within kFastMargin·|k'| of 0, or k'_x = 0, the exact twin computation decides.
CR_HD float wedge_value(double kz, double ky, double kx, const double* R, const WedgeBounds& b) {
  double kzr = radd(radd(rmul(R[0], kz), rmul(R[3], ky)), rmul(R[6], kx));
  double kxr = radd(radd(rmul(R[2], kz), rmul(R[5], ky)), rmul(R[8], kx));
  if (fabs(kzr) < b.tiny) kzr = 0.0;
  if (fabs(kxr) < b.tiny) kxr = 0.0;
  if (kxr == 0.0) return wedge_exact(kzr, kxr, b.lo, b.hi);
  const double sx = kxr > 0.0 ? kxr : -kxr;
  const double sz = kxr > 0.0 ? kzr : -kzr;
  const double margin = kFastMargin * (sx + fabs(sz));
  bool inside = true;
  if (b.check_lo) {
    const double d = sz * b.cos_lo - sx * b.sin_lo;
    if (fabs(d) <= margin) return wedge_exact(kzr, kxr, b.lo, b.hi);
    inside = d > 0.0;
  }
  if (b.check_hi) {
    const double d = sx * b.sin_hi - sz * b.cos_hi;
    if (fabs(d) <= margin) return wedge_exact(kzr, kxr, b.lo, b.hi);
    inside = inside && d > 0.0;
  }
  return inside ? 1.0f : 0.0f;
}

}  // namespace cryorestore
