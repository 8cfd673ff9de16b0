// Missing-wedge masks on the CPU: a batch of rotated wedges on the rfft grid, and the fused
// in-place application of those masks to a batch of spectra. Parallel over (batch, z plane).
#include "native.h"
#include "wedge_rule.h"

#include <ATen/Parallel.h>

namespace cryorestore {
namespace {

struct Grid {
  const double* kz;
  const double* ky;
  const double* kx;
  int64_t Z, Y, Xr;
};

Grid grid_of(const at::Tensor& kz, const at::Tensor& ky, const at::Tensor& kx) {
  return {kz.data_ptr<double>(), ky.data_ptr<double>(), kx.data_ptr<double>(), kz.size(0), ky.size(0), kx.size(0)};
}

// Calls fn(b, offset_in_volume, value) for every coefficient of plane z of batch item b.
template <typename Fn>
void for_plane(const Grid& g, const double* R, const WedgeBounds& wb, int64_t z, Fn&& fn) {
  const double kz = g.kz[z];
  for (int64_t y = 0; y < g.Y; ++y) {
    const double ky = g.ky[y];
    const int64_t base = (z * g.Y + y) * g.Xr;
    for (int64_t x = 0; x < g.Xr; ++x) fn(base + x, wedge_value(kz, ky, g.kx[x], R, wb));
  }
}

template <typename real_t>
void apply_kernel(real_t* spec, const Grid& g, const double* rot, int64_t B, int64_t R, const WedgeBounds& wb) {
  const int64_t vol = g.Z * g.Y * g.Xr;
  at::parallel_for(0, B * g.Z, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / g.Z, z = item % g.Z;
      real_t* s = spec + 2 * b * vol;
      for_plane(g, rot + 9 * (b % R), wb, z, [&](int64_t i, float m) {
        s[2 * i] *= static_cast<real_t>(m);
        s[2 * i + 1] *= static_cast<real_t>(m);
      });
    }
  });
}

}  // namespace

void wedge_mask_cpu(const at::Tensor& kz, const at::Tensor& ky, const at::Tensor& kx,
                    const at::Tensor& rotations, double lo, double hi, double tiny, at::Tensor& out) {
  const Grid g = grid_of(kz, ky, kx);
  const int64_t R = rotations.size(0);
  float* o = out.data_ptr<float>();
  const double* rot = rotations.data_ptr<double>();
  const int64_t vol = g.Z * g.Y * g.Xr;
  const WedgeBounds wb = make_bounds(lo, hi, tiny);
  at::parallel_for(0, R * g.Z, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / g.Z, z = item % g.Z;
      float* dst = o + b * vol;
      for_plane(g, rot + 9 * b, wb, z, [&](int64_t i, float m) { dst[i] = m; });
    }
  });
}

void apply_wedge_cpu(at::Tensor& spectra, const at::Tensor& kz, const at::Tensor& ky, const at::Tensor& kx,
                     const at::Tensor& rotations, double lo, double hi, double tiny) {
  const Grid g = grid_of(kz, ky, kx);
  const int64_t B = spectra.size(0), R = rotations.size(0);
  const double* rot = rotations.data_ptr<double>();
  if (spectra.scalar_type() == at::kComplexFloat) {
    apply_kernel<float>(reinterpret_cast<float*>(spectra.data_ptr()), g, rot, B, R, make_bounds(lo, hi, tiny));
  } else {
    apply_kernel<double>(reinterpret_cast<double*>(spectra.data_ptr()), g, rot, B, R, make_bounds(lo, hi, tiny));
  }
}

}  // namespace cryorestore
