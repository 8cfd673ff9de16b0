"""Networks: shapes, gradients, parameter counts, rebuilding from options, and the parts with a
numerical definition (MS-D dense dilated layers, shifted-window attention) against references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cryorestore.errors import InputError
from cryorestore.models import (MODEL_NAMES, build_model, count_parameters, default_options,
                                pad_to_multiple)

# small settings so that the tests run in seconds on two CPU cores
SMALL = {
    "unet": dict(depth=2, base_channels=4, convs_per_block=1),
    "msdnet": dict(depth=6, max_dilation=4),
    "scunet": dict(dim=4, levels=2, blocks=2, head_dim=2, window=4),
    "swinunetr": dict(feature_size=12, depths=[1, 1, 1, 1]),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _check_grads(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or float(p.grad.abs().sum()) == 0.0]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shape_gradients_and_parameter_count(name):
    model = build_model(name, **SMALL[name])
    n = count_parameters(model)
    assert n == sum(p.numel() for p in model.parameters()) > 0
    x = torch.randn(1, 1, 32, 32, 32)
    y = model(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    (y - 0.5 * x).square().mean().backward()
    _check_grads(model)
    with torch.no_grad():
        x2 = torch.randn(1 if name == "swinunetr" else 2, 1, 16, 16, 32)  # anisotropic, divisible by 16
        assert model(x2).shape == x2.shape


@pytest.mark.parametrize("name", ["unet", "msdnet"])
def test_shape_64_cheap(name):
    model = build_model(name, **SMALL[name]).eval()
    with torch.no_grad():
        x = torch.randn(1, 1, 64, 64, 64)
        assert model(x).shape == x.shape


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scunet", "swinunetr"])
def test_shape_64_transformers(name):
    model = build_model(name, **SMALL[name])
    x = torch.randn(1, 1, 64, 64, 64)
    y = model(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    _check_grads(model)


def test_default_parameter_counts_msdnet_far_fewer_than_unet():
    counts = {name: count_parameters(build_model(name)) for name in ("unet", "msdnet")}
    depth = default_options("msdnet")["depth"]
    # layer i sees 1 + i maps: 27 (1 + i) weights + 1 bias; final 1×1×1 conv over 1 + depth maps
    assert counts["msdnet"] == sum(27 * (1 + i) + 1 for i in range(depth)) + (1 + depth) + 1
    assert counts["msdnet"] < 100_000
    assert counts["unet"] > 50 * counts["msdnet"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_options_rebuild_same_network(name):
    opts = default_options(name)
    assert opts["residual"] is True
    json.dumps(opts)  # saved in the model config
    model = build_model(name, **SMALL[name])
    saved = json.loads(json.dumps(model.options))
    assert {k for k in saved} == set(opts)
    again = build_model(name, **saved)
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    again.load_state_dict(a)  # strict: same architecture
    if name in ("unet", "msdnet", "scunet"):  # (a SwinUNETR forward costs seconds; its weights load strictly)
        x = torch.randn(1, 1, 16, 16, 16)
        model.eval(), again.eval()
        with torch.no_grad():
            assert torch.allclose(model(x), again(x), atol=1e-6)


def test_residual_option_adds_input():
    x = torch.randn(1, 1, 16, 16, 16)
    plain = build_model("unet", residual=False, **SMALL["unet"]).eval()
    res = build_model("unet", residual=True, **SMALL["unet"]).eval()
    res.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.allclose(res(x), x + plain(x), atol=1e-6)


@pytest.mark.parametrize("opts", [dict(down="maxpool", up="transpose", norm="group"),
                                  dict(down="avgpool", up="nearest", norm="batch", dropout=0.1),
                                  dict(norm="none", depth=3)])
def test_unet_variants_and_odd_sizes(opts):
    model = build_model("unet", **{**SMALL["unet"], **opts})
    x = torch.randn(2, 1, 20, 12, 18)  # not a multiple of 2**depth: padded and cropped
    y = model(x)
    assert y.shape == x.shape
    y.mean().backward()


def test_bad_names_options_and_inputs():
    with pytest.raises(ValueError, match="unet, msdnet, scunet, swinunetr"):
        build_model("resnet")
    with pytest.raises(InputError, match="base_channels"):
        build_model("unet", channels=8)
    with pytest.raises(InputError):
        build_model("unet", norm="layer")
    with pytest.raises(InputError):
        build_model("swinunetr", feature_size=16)
    with pytest.raises(InputError):
        build_model("scunet", dim=8, head_dim=3)
    model = build_model("msdnet", **SMALL["msdnet"])
    with pytest.raises(ValueError):
        model(torch.randn(1, 16, 16, 16))
    with pytest.raises(ValueError):
        model(torch.randn(1, 2, 16, 16, 16))


def test_pad_to_multiple_reflects_and_keeps_original():
    x = torch.arange(5.0).view(1, 1, 1, 1, 5).expand(1, 1, 3, 2, 5).contiguous()
    y, size = pad_to_multiple(x, 4)
    assert size == (3, 2, 5) and y.shape[-3:] == (4, 4, 8)
    assert torch.equal(y[..., :3, :2, :5], x)
    assert y[0, 0, 0, 0, 5:].tolist() == [3.0, 2.0, 1.0]  # reflect along x (5 > 3)
    assert torch.equal(y[..., 2:, :], y[..., 1:2, :].expand_as(y[..., 2:, :]))  # replicate along y (2 < 2 + 2)
    same, _ = pad_to_multiple(x[..., :4, :4, :4], 1)
    assert same.shape == x[..., :4, :4, :4].shape


# --------------------------------------------------------------------------------------------
# MS-D Net
# --------------------------------------------------------------------------------------------
def test_msdnet_forward_equals_scipy_dense_dilated_reference():
    """float64 MS-D forward against scipy.ndimage.correlate with explicitly dilated (zero-stuffed) kernels."""
    from scipy import ndimage

    torch.manual_seed(7)
    model = build_model("msdnet", depth=4, max_dilation=3, residual=False).double().eval()
    net = model.net
    x = torch.randn(1, 1, 9, 11, 10, dtype=torch.float64)
    maps = [x[0, 0].numpy()]
    for conv, d in zip(net.layers, net.dilations):
        w = conv.weight.detach().numpy()[0]  # (in_channels, 3, 3, 3)
        acc = np.full(maps[0].shape, float(conv.bias.detach()[0]))
        for c, m in enumerate(maps):
            k = np.zeros((2 * d + 1,) * 3)
            k[::d, ::d, ::d] = w[c]
            acc += ndimage.correlate(m, k, mode="constant", cval=0.0)
        maps.append(np.maximum(acc, 0.0))
    fw = net.final.weight.detach().numpy().reshape(-1)
    ref = sum(wi * m for wi, m in zip(fw, maps)) + float(net.final.bias.detach()[0])
    with torch.no_grad():
        got = model(x)[0, 0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_msdnet_dilations_and_checkpointing_match():
    net = build_model("msdnet").net
    assert net.dilations[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2]
    torch.manual_seed(3)
    a = build_model("msdnet", **SMALL["msdnet"], checkpointing=True)
    b = build_model("msdnet", **SMALL["msdnet"], checkpointing=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 12, 10, 14)
    ya, yb = a(x), b(x)
    assert torch.allclose(ya, yb, atol=1e-6)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), n


def test_msdnet_layers_see_all_previous_maps():
    net = build_model("msdnet", depth=5, width=2).net
    assert [layer.in_channels for layer in net.layers] == [1, 3, 5, 7, 9]
    assert net.final.in_channels == 11


# --------------------------------------------------------------------------------------------
# SCUNet: shifted-window attention against a per-voxel reference
# --------------------------------------------------------------------------------------------
def _reference_swin_block(block, x: torch.Tensor) -> torch.Tensor:
    """Per-voxel Swin block: voxel p attends to the real voxels q with ⌊(q − s)/w⌋ = ⌊(p − s)/w⌋
    on every axis (windows offset by the shift s, no wrap-around), relative bias by p − q."""
    w, heads = block.window, block.attn.heads
    b, z, y, xx, c = x.shape
    s = block.shift if max(z, y, xx) > w else 0
    h = block.norm1(x)
    q, k, v = block.attn.qkv(h).chunk(3, dim=-1)
    coords = torch.stack(torch.meshgrid(torch.arange(z), torch.arange(y), torch.arange(xx), indexing="ij"), -1).view(-1, 3)
    group = torch.div(coords - s, w, rounding_mode="floor")
    same = (group[:, None, :] == group[None, :, :]).all(-1)  # (N, N)
    rel = (coords[:, None, :] - coords[None, :, :] + (w - 1)).clamp(0, 2 * w - 2)  # only used within a window
    m = 2 * w - 1
    bias = block.attn.bias_table[rel[..., 0] * m * m + rel[..., 1] * m + rel[..., 2]]  # (N, N, heads)
    dh = c // heads
    qf, kf, vf = (t.reshape(b, -1, heads, dh) for t in (q, k, v))
    out = torch.zeros(b, z * y * xx, heads, dh, dtype=x.dtype)
    for i in range(z * y * xx):
        keys = torch.nonzero(same[i])[:, 0]
        logits = torch.einsum("bhd,bkhd->bhk", qf[:, i] * block.attn.scale, kf[:, keys]) + bias[i, keys].T[None]
        out[:, i] = torch.einsum("bhk,bkhd->bhd", logits.softmax(-1), vf[:, keys])
    att = block.attn.proj(out.reshape(b, z, y, xx, c))
    x = x + att
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("size,shifted", [((6, 5, 7), False), ((6, 5, 7), True), ((8, 8, 8), True), ((3, 2, 4), True)])
def test_swin_block_matches_per_voxel_reference(size, shifted):
    from cryorestore.models.scunet import SwinBlock3D

    torch.manual_seed(1)
    block = SwinBlock3D(dim=8, heads=2, window=4, shifted=shifted).double()
    with torch.no_grad():
        block.attn.bias_table.normal_(0, 0.5)  # make the relative bias matter
    x = torch.randn(2, *size, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(block(x), _reference_swin_block(block, x), atol=1e-10)
