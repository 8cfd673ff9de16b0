// Overlap-add blending of predicted tiles on the CPU.
//
// Parallel over output z planes: the thread that owns plane z adds window·tile and window of
// every tile reaching z (in tile order, so sums are the same as the torch twin's sequential
// adds), then divides in place (by max(weight, FLT_MIN), as the twin clamps). The weight plane is thread-local scratch; each output plane is
// zeroed first and fully written, so no output element is left uninitialised.
#include "native.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cfloat>
#include <vector>

namespace cryorestore {

void blend_tiles_cpu(const at::Tensor& tiles, const at::Tensor& origins, const at::Tensor& window,
                     at::Tensor& out) {
  const int64_t T = tiles.size(0), d = tiles.size(1), h = tiles.size(2), w = tiles.size(3);
  const int64_t Z = out.size(0), Y = out.size(1), X = out.size(2);
  float* o = out.data_ptr<float>();
  const float* tl = tiles.data_ptr<float>();
  const float* win = window.data_ptr<float>();
  const int64_t* org = origins.data_ptr<int64_t>();
  const int64_t plane = Y * X;

  // tiles sorted by their first z plane, so a plane only scans the tiles that can reach it
  std::vector<int64_t> order(T);
  for (int64_t t = 0; t < T; ++t) order[t] = t;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return org[3 * a] < org[3 * b]; });

  at::parallel_for(0, Z, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> weight(static_cast<size_t>(plane));
    std::vector<int64_t> touching;
    for (int64_t z = begin; z < end; ++z) {
      float* num = o + z * plane;
      std::fill(num, num + plane, 0.0f);
      std::fill(weight.begin(), weight.end(), 0.0f);
      // keep the original tile order among the tiles that reach z (same summation order as the twin)
      touching.clear();
      for (int64_t t : order) {
        const int64_t z0 = org[3 * t];
        if (z0 > z) break;
        if (z < z0 + d) touching.push_back(t);
      }
      std::sort(touching.begin(), touching.end());
      for (int64_t t : touching) {
        const int64_t tz = z - org[3 * t], y0 = org[3 * t + 1], x0 = org[3 * t + 2];
        const float* src = tl + ((t * d + tz) * h) * w;
        const float* wz = win + tz * h * w;
        for (int64_t y = 0; y < h; ++y) {
          float* nrow = num + (y0 + y) * X + x0;
          float* wrow = weight.data() + (y0 + y) * X + x0;
          const float* srow = src + y * w;
          const float* wsrc = wz + y * w;
          for (int64_t x = 0; x < w; ++x) {
            nrow[x] += wsrc[x] * srow[x];
            wrow[x] += wsrc[x];
          }
        }
      }
      for (int64_t i = 0; i < plane; ++i) num[i] = weight[i] > 0.0f ? num[i] / std::max(weight[i], FLT_MIN) : 0.0f;
    }
  });
}

}  // namespace cryorestore
