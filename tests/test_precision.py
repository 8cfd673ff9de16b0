"""Training precision: bf16 only on GPUs with native bf16 (compute capability >= 8.0), fp16 + GradScaler on
older GPUs (where torch.cuda.is_bf16_supported() may still say True: emulated), float32 on CPU."""

import warnings

import pytest
import torch

from cryorestore import precision


@pytest.fixture
def capability(monkeypatch):
    """Pretend the GPU has the given compute capability (and that bf16 'is supported', as torch says on V100)."""

    def _set(cap):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    return _set


@pytest.mark.parametrize("cap, dtype", [((7, 0), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                        ((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16), ((6, 1), torch.float16)])
def test_autocast_dtype_follows_compute_capability(capability, cap, dtype):
    capability(cap)
    assert precision.autocast_dtype(torch.device("cuda", 0)) == dtype
    assert precision.autocast_dtype(torch.device("cuda", 0), enabled=False) is None


def test_fp16_gets_a_grad_scaler_and_bf16_does_not(capability):
    capability((7, 0))  # V100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler warns that CUDA is absent on a CPU-only machine
        p = precision.training_precision(torch.device("cuda", 0))
    assert p.dtype == torch.float16 and isinstance(p.scaler, torch.amp.GradScaler)
    assert p.describe() == "float16 autocast + GradScaler"
    capability((8, 0))  # A100
    p = precision.training_precision(torch.device("cuda", 0))
    assert p.dtype == torch.bfloat16 and p.scaler is None and p.describe() == "bfloat16 autocast"


def test_cpu_trains_in_float32_whatever_the_gpu(capability):
    capability((9, 0))
    p = precision.training_precision(torch.device("cpu"))
    assert p.dtype is None and p.scaler is None and p.describe() == "float32"
    lin = torch.nn.Linear(3, 3)
    with p.autocast():
        assert lin(torch.randn(2, 3)).dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_gpu_choice_and_autocast_output_dtype():
    dev = torch.device("cuda", 0)
    p = precision.training_precision(dev)
    native = torch.cuda.get_device_capability(dev) >= (8, 0)
    assert p.dtype == (torch.bfloat16 if native else torch.float16) and (p.scaler is None) == native
    lin = torch.nn.Linear(8, 8).to(dev)
    with p.autocast():
        assert lin(torch.randn(4, 8, device=dev)).dtype == p.dtype
