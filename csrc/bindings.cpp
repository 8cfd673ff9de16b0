// pybind11 bindings of the cryorestore native kernels: argument checks, then dispatch on the
// tensors' device to the CPU implementation or (when built with CUDA) the CUDA one.
#include <torch/extension.h>

#include "native.h"

#ifdef CRYORESTORE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels_cuda.h"
// the current stream of the tensor's device, for the .cu launchers
#define CR_STREAM(t) c10::cuda::getCurrentCUDAStream((t).get_device()).stream()
#define CR_GUARD(t) const c10::cuda::CUDAGuard cr_guard_((t).device())
#define CR_CUDA_CHECK(expr)                                                                          \
  do {                                                                                               \
    const cudaError_t cr_err_ = (expr);                                                              \
    TORCH_CHECK(cr_err_ == cudaSuccess, "CUDA error in ", #expr, ": ", cudaGetErrorString(cr_err_)); \
  } while (0)
#endif

namespace cryorestore {
namespace {

bool built_with_cuda() {
#ifdef CRYORESTORE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

void check_cuda_available(const at::Tensor& t) {
  TORCH_CHECK(!t.is_cuda() || built_with_cuda(),
              "cryorestore native extension was built without CUDA; rebuild with a CUDA toolkit for GPU tensors");
}

void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* what) {
  TORCH_CHECK(a.device() == b.device(), what, " must be on the same device (", a.device(), " vs ", b.device(), ")");
}

// The output: `out` when given (checked: dtype, shape, device, contiguous), else a new tensor.
at::Tensor output(const c10::optional<at::Tensor>& out, at::IntArrayRef sizes, const at::TensorOptions& options) {
  if (!out.has_value()) return at::empty(sizes, options);
  const at::Tensor& o = *out;
  TORCH_CHECK(o.sizes() == sizes, "out has shape ", o.sizes(), ", expected ", sizes);
  TORCH_CHECK(o.scalar_type() == options.dtype().toScalarType(), "out has dtype ", o.scalar_type(), ", expected ",
              options.dtype());
  TORCH_CHECK(o.device() == options.device(), "out is on ", o.device(), ", expected ", options.device());
  TORCH_CHECK(o.is_contiguous(), "out must be contiguous");
  return o;
}

void check_grid(const at::Tensor& kz, const at::Tensor& ky, const at::Tensor& kx, const at::Tensor& rotations) {
  TORCH_CHECK(kz.dim() == 1 && ky.dim() == 1 && kx.dim() == 1, "frequency vectors must be 1D");
  TORCH_CHECK(kz.scalar_type() == at::kDouble && ky.scalar_type() == at::kDouble && kx.scalar_type() == at::kDouble,
              "frequency vectors must be float64");
  TORCH_CHECK(rotations.dim() == 3 && rotations.size(1) == 3 && rotations.size(2) == 3 && rotations.size(0) >= 1,
              "rotations must be (R, 3, 3), got ", rotations.sizes());
  TORCH_CHECK(rotations.scalar_type() == at::kDouble, "rotations must be float64");
  check_same_device(kz, rotations, "frequencies and rotations");
  check_same_device(ky, rotations, "frequencies and rotations");
  check_same_device(kx, rotations, "frequencies and rotations");
}

at::Tensor fsc_shells(const at::Tensor& f1_in, const at::Tensor& f2_in, const at::Tensor& shells_in, int64_t n,
                      bool nyquist_once, const c10::optional<at::Tensor>& out_opt) {
  TORCH_CHECK(f1_in.sizes() == f2_in.sizes(), "spectra differ in shape: ", f1_in.sizes(), " vs ", f2_in.sizes());
  TORCH_CHECK(f1_in.dim() == 4, "spectra must be (B, Z, Y, Xr), got ", f1_in.sizes());
  TORCH_CHECK(f1_in.scalar_type() == f2_in.scalar_type(), "spectra differ in dtype");
  TORCH_CHECK(f1_in.scalar_type() == at::kComplexFloat || f1_in.scalar_type() == at::kComplexDouble,
              "spectra must be complex64 or complex128");
  TORCH_CHECK(n >= 1, "n_shells must be >= 1");
  TORCH_CHECK(shells_in.dim() == 3 && shells_in.size(0) == f1_in.size(1) && shells_in.size(1) == f1_in.size(2) &&
                  shells_in.size(2) == f1_in.size(3),
              "shell index ", shells_in.sizes(), " does not match the spectra ", f1_in.sizes());
  TORCH_CHECK(shells_in.scalar_type() == at::kInt, "shell index must be int32 (values in [0, n])");
  check_same_device(f1_in, f2_in, "spectra");
  check_same_device(f1_in, shells_in, "spectra and shell index");
  check_cuda_available(f1_in);
  const at::Tensor f1 = f1_in.contiguous(), f2 = f2_in.contiguous(), shells = shells_in.contiguous();
  at::Tensor out = output(out_opt, {f1.size(0), 3, n}, f1.options().dtype(at::kDouble));
#ifdef CRYORESTORE_WITH_CUDA
  if (f1.is_cuda()) {
    CR_GUARD(f1);
    out.zero_();
    const int64_t vol = f1.size(1) * f1.size(2) * f1.size(3);
    int sms = 0;
    CR_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, f1.get_device()));
    if (f1.scalar_type() == at::kComplexFloat) {
      CR_CUDA_CHECK(cuda::fsc_shells_f32(reinterpret_cast<const float*>(f1.data_ptr()),
                                         reinterpret_cast<const float*>(f2.data_ptr()), shells.data_ptr<int32_t>(),
                                         f1.size(0), vol, f1.size(3), n, nyquist_once, sms, out.data_ptr<double>(),
                                         CR_STREAM(f1)));
    } else {
      CR_CUDA_CHECK(cuda::fsc_shells_f64(reinterpret_cast<const double*>(f1.data_ptr()),
                                         reinterpret_cast<const double*>(f2.data_ptr()), shells.data_ptr<int32_t>(),
                                         f1.size(0), vol, f1.size(3), n, nyquist_once, sms, out.data_ptr<double>(),
                                         CR_STREAM(f1)));
    }
    return out;
  }
#endif
  fsc_shells_cpu(f1, f2, shells, n, nyquist_once, out);
  return out;
}

at::Tensor wedge_mask(const at::Tensor& kz_in, const at::Tensor& ky_in, const at::Tensor& kx_in,
                      const at::Tensor& rot_in, double lo, double hi, double tiny,
                      const c10::optional<at::Tensor>& out_opt) {
  check_grid(kz_in, ky_in, kx_in, rot_in);
  check_cuda_available(rot_in);
  const at::Tensor kz = kz_in.contiguous(), ky = ky_in.contiguous(), kx = kx_in.contiguous();
  const at::Tensor rot = rot_in.contiguous();
  at::Tensor out = output(out_opt, {rot.size(0), kz.size(0), ky.size(0), kx.size(0)}, rot.options().dtype(at::kFloat));
#ifdef CRYORESTORE_WITH_CUDA
  if (rot.is_cuda()) {
    CR_GUARD(rot);
    CR_CUDA_CHECK(cuda::wedge_mask(kz.data_ptr<double>(), ky.data_ptr<double>(), kx.data_ptr<double>(), kz.size(0),
                                   ky.size(0), kx.size(0), rot.data_ptr<double>(), rot.size(0), lo, hi, tiny,
                                   out.data_ptr<float>(), CR_STREAM(rot)));
    return out;
  }
#endif
  wedge_mask_cpu(kz, ky, kx, rot, lo, hi, tiny, out);
  return out;
}

at::Tensor apply_wedge(at::Tensor spectra, const at::Tensor& kz_in, const at::Tensor& ky_in, const at::Tensor& kx_in,
                       const at::Tensor& rot_in, double lo, double hi, double tiny) {
  check_grid(kz_in, ky_in, kx_in, rot_in);
  TORCH_CHECK(spectra.dim() == 4, "spectra must be (B, Z, Y, Xr), got ", spectra.sizes());
  TORCH_CHECK(spectra.scalar_type() == at::kComplexFloat || spectra.scalar_type() == at::kComplexDouble,
              "spectra must be complex64 or complex128");
  TORCH_CHECK(spectra.size(1) == kz_in.size(0) && spectra.size(2) == ky_in.size(0) && spectra.size(3) == kx_in.size(0),
              "spectra ", spectra.sizes(), " do not match the frequency grid");
  TORCH_CHECK(rot_in.size(0) == 1 || rot_in.size(0) == spectra.size(0),
              "need one rotation or one per spectrum, got ", rot_in.size(0), " for ", spectra.size(0));
  TORCH_CHECK(spectra.is_contiguous(), "apply_wedge works in place and needs a contiguous spectra tensor");
  check_same_device(spectra, rot_in, "spectra and rotations");
  check_cuda_available(spectra);
  const at::Tensor kz = kz_in.contiguous(), ky = ky_in.contiguous(), kx = kx_in.contiguous();
  const at::Tensor rot = rot_in.contiguous();
#ifdef CRYORESTORE_WITH_CUDA
  if (spectra.is_cuda()) {
    CR_GUARD(spectra);
    if (spectra.scalar_type() == at::kComplexFloat) {
      CR_CUDA_CHECK(cuda::apply_wedge_f32(reinterpret_cast<float*>(spectra.data_ptr()), spectra.size(0),
                                          kz.data_ptr<double>(), ky.data_ptr<double>(), kx.data_ptr<double>(),
                                          kz.size(0), ky.size(0), kx.size(0), rot.data_ptr<double>(), rot.size(0), lo,
                                          hi, tiny, CR_STREAM(spectra)));
    } else {
      CR_CUDA_CHECK(cuda::apply_wedge_f64(reinterpret_cast<double*>(spectra.data_ptr()), spectra.size(0),
                                          kz.data_ptr<double>(), ky.data_ptr<double>(), kx.data_ptr<double>(),
                                          kz.size(0), ky.size(0), kx.size(0), rot.data_ptr<double>(), rot.size(0), lo,
                                          hi, tiny, CR_STREAM(spectra)));
    }
    return spectra;
  }
#endif
  apply_wedge_cpu(spectra, kz, ky, kx, rot, lo, hi, tiny);
  return spectra;
}

at::Tensor blend_tiles(const at::Tensor& tiles_in, const at::Tensor& origins_in, const at::Tensor& window_in,
                       int64_t Z, int64_t Y, int64_t X, const c10::optional<at::Tensor>& out_opt) {
  TORCH_CHECK(tiles_in.dim() == 4 && tiles_in.scalar_type() == at::kFloat, "tiles must be float32 (T, d, h, w)");
  TORCH_CHECK(window_in.scalar_type() == at::kFloat && window_in.dim() == 3 &&
                  window_in.sizes() == tiles_in.sizes().slice(1),
              "window must be float32 with the tile shape");
  TORCH_CHECK(origins_in.dim() == 2 && origins_in.size(0) == tiles_in.size(0) && origins_in.size(1) == 3 &&
                  origins_in.scalar_type() == at::kLong,
              "origins must be int64 (T, 3)");
  TORCH_CHECK(Z >= 1 && Y >= 1 && X >= 1, "output shape must be positive");
  check_same_device(tiles_in, window_in, "tiles and window");
  check_same_device(tiles_in, origins_in, "tiles and origins");
  check_cuda_available(tiles_in);
  const at::Tensor tiles = tiles_in.contiguous(), origins = origins_in.contiguous(), window = window_in.contiguous();
  {  // bounds (origins are small; check on the host)
    const at::Tensor o = origins.cpu();
    const int64_t* p = o.data_ptr<int64_t>();
    const int64_t ext[3] = {tiles.size(1), tiles.size(2), tiles.size(3)}, lim[3] = {Z, Y, X};
    for (int64_t t = 0; t < o.size(0); ++t)
      for (int a = 0; a < 3; ++a)
        TORCH_CHECK(p[3 * t + a] >= 0 && p[3 * t + a] + ext[a] <= lim[a], "tile ", t, " reaches outside the output");
  }
  at::Tensor out = output(out_opt, {Z, Y, X}, tiles.options());
#ifdef CRYORESTORE_WITH_CUDA
  if (tiles.is_cuda()) {
    CR_GUARD(tiles);
    at::Tensor num = out.zero_();
    at::Tensor den = at::zeros({Z, Y, X}, tiles.options());
    CR_CUDA_CHECK(cuda::blend_tiles(tiles.data_ptr<float>(), origins.data_ptr<int64_t>(), window.data_ptr<float>(),
                                    tiles.size(0), tiles.size(1), tiles.size(2), tiles.size(3), Z, Y, X,
                                    num.data_ptr<float>(), den.data_ptr<float>(), CR_STREAM(tiles)));
    return num;
  }
#endif
  blend_tiles_cpu(tiles, origins, window, out);
  return out;
}

}  // namespace
}  // namespace cryorestore

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cryorestore native kernels: batched FSC shell sums, missing-wedge masks, tile blending";
  m.def("fsc_shells", &cryorestore::fsc_shells, "FSC shell sums (B, 3, n) float64 of rfft spectra",
        pybind11::arg("f1"), pybind11::arg("f2"), pybind11::arg("shells"), pybind11::arg("n"),
        pybind11::arg("nyquist_once"), pybind11::arg("out") = pybind11::none());
  m.def("wedge_mask", &cryorestore::wedge_mask, "rotated missing-wedge masks (R, Z, Y, Xr) float32",
        pybind11::arg("kz"), pybind11::arg("ky"), pybind11::arg("kx"), pybind11::arg("rotations"),
        pybind11::arg("lo"), pybind11::arg("hi"), pybind11::arg("tiny"), pybind11::arg("out") = pybind11::none());
  m.def("apply_wedge", &cryorestore::apply_wedge, "multiply spectra in place by their rotated wedge masks",
        pybind11::arg("spectra"), pybind11::arg("kz"), pybind11::arg("ky"), pybind11::arg("kx"),
        pybind11::arg("rotations"), pybind11::arg("lo"), pybind11::arg("hi"), pybind11::arg("tiny"));
  m.def("blend_tiles", &cryorestore::blend_tiles, "overlap-add blending of tiles with window normalisation",
        pybind11::arg("tiles"), pybind11::arg("origins"), pybind11::arg("window"), pybind11::arg("Z"),
        pybind11::arg("Y"), pybind11::arg("X"), pybind11::arg("out") = pybind11::none());
  m.def("with_cuda", &cryorestore::built_with_cuda, "whether the CUDA path was compiled in");
}
