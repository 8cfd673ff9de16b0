// FSC shell sums on the CPU: every pair of a batch in one call.
//
// Work is split into fixed items (pair b, slab of z planes) run by at::parallel_for; each item
// accumulates into its own float64 histogram (3 sums per shell, one spare bin for excluded
// coefficients so the inner loop has no branch) and the items of a pair are summed in a fixed
// order afterwards, so results do not depend on the number of threads. Interior x planes
// (weight 2) and the once-counted planes (x = 0 and, for an even X, the Nyquist plane) go into
// separate histograms that are combined as once + 2·twice at the end.
#include "native.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace cryorestore {
namespace {

constexpr int64_t kSlab = 4;  // z planes per work item

template <typename real_t>
inline void accumulate(const real_t* a, const real_t* b, int32_t s, double* h) {
  const double ar = a[0], ai = a[1], br = b[0], bi = b[1];
  double* bin = h + 3 * static_cast<int64_t>(s);
  bin[0] += ar * br + ai * bi;
  bin[1] += ar * ar + ai * ai;
  bin[2] += br * br + bi * bi;
}

template <typename real_t>
void fsc_kernel(const real_t* f1, const real_t* f2, const int32_t* shells, int64_t B, int64_t Z, int64_t Y,
                int64_t Xr, int64_t n, bool nyquist_once, double* out) {
  const int64_t n_slabs = (Z + kSlab - 1) / kSlab;
  const int64_t items = B * n_slabs;
  const int64_t bins = 3 * (n + 1);
  const int64_t vol = Z * Y * Xr;
  // x range counted twice: [1, x_end); x = 0 and (if nyquist_once) x = Xr-1 are counted once
  const int64_t x_end = (nyquist_once && Xr > 1) ? Xr - 1 : Xr;
  std::vector<double> partial(static_cast<size_t>(items * bins), 0.0);

  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> once(bins), twice(bins);
    for (int64_t item = begin; item < end; ++item) {
      std::fill(once.begin(), once.end(), 0.0);
      std::fill(twice.begin(), twice.end(), 0.0);
      const int64_t b = item / n_slabs;
      const int64_t z0 = (item % n_slabs) * kSlab;
      const int64_t z1 = std::min(Z, z0 + kSlab);
      const real_t* a = f1 + 2 * b * vol;
      const real_t* c = f2 + 2 * b * vol;
      double* h1 = once.data();
      double* h2 = twice.data();
      for (int64_t row = z0 * Y; row < z1 * Y; ++row) {
        const int64_t base = row * Xr;
        const int32_t* s = shells + base;
        const real_t* ar = a + 2 * base;
        const real_t* cr = c + 2 * base;
        accumulate(ar, cr, s[0], h1);
        for (int64_t x = 1; x < x_end; ++x) accumulate(ar + 2 * x, cr + 2 * x, s[x], h2);
        if (x_end < Xr) accumulate(ar + 2 * x_end, cr + 2 * x_end, s[x_end], h1);
      }
      double* dst = partial.data() + item * bins;
      for (int64_t k = 0; k < bins; ++k) dst[k] = once[k] + 2.0 * twice[k];
    }
  });

  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = 0; k < n; ++k) {
      double sums[3] = {0.0, 0.0, 0.0};
      for (int64_t sl = 0; sl < n_slabs; ++sl) {
        const double* src = partial.data() + (b * n_slabs + sl) * bins + 3 * k;
        sums[0] += src[0];
        sums[1] += src[1];
        sums[2] += src[2];
      }
      for (int t = 0; t < 3; ++t) out[(b * 3 + t) * n + k] = sums[t];
    }
  }
}

}  // namespace

void fsc_shells_cpu(const at::Tensor& f1, const at::Tensor& f2, const at::Tensor& shells, int64_t n,
                    bool nyquist_once, at::Tensor& out) {
  const int64_t B = f1.size(0), Z = f1.size(1), Y = f1.size(2), Xr = f1.size(3);
  const int32_t* s = shells.data_ptr<int32_t>();
  if (f1.scalar_type() == at::kComplexFloat) {
    fsc_kernel<float>(reinterpret_cast<const float*>(f1.data_ptr()), reinterpret_cast<const float*>(f2.data_ptr()), s,
                      B, Z, Y, Xr, n, nyquist_once, out.data_ptr<double>());
  } else {
    fsc_kernel<double>(reinterpret_cast<const double*>(f1.data_ptr()), reinterpret_cast<const double*>(f2.data_ptr()),
                       s, B, Z, Y, Xr, n, nyquist_once, out.data_ptr<double>());
  }
}

}  // namespace cryorestore
