"""Rotations and Euler angles.

Conventions
-----------
* Euler angles are RELION's ZYZ triple (rot, tilt, psi) in degrees. :func:`euler_to_matrix` returns
  RELION's matrix ``A`` (``Euler_angles2matrix``), which acts on (x, y, z) column vectors.
* A particle with angles (rot, tilt, psi) at position ``p`` is the reference rotated *actively* by
  ``A``: ``particle(r) = reference(A^T (r - p))``. Hence a subtomogram is brought back into the
  reference frame by sampling ``tomogram(p + A s)`` on reference coordinates ``s``.
* Arrays are indexed (z, y, x). :func:`xyz_to_zyx` converts a matrix acting on (x, y, z) vectors into
  the same rotation acting on (z, y, x) index vectors; every function taking ``R_zyx`` expects that form.
* Rotation centre of a box of size N along an axis is voxel ``N // 2`` (the FFT origin after fftshift),
  as in RELION.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation


def euler_to_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """RELION ZYZ Euler angles (…, 3) in degrees → rotation matrices ``A`` (…, 3, 3) on (x, y, z)."""
    ang = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    a, b, g = ang[..., 0], ang[..., 1], ang[..., 2]
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    m = np.empty(ang.shape[:-1] + (3, 3))
    m[..., 0, 0] = cg * cc - sg * sa
    m[..., 0, 1] = cg * cs + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cc - cg * sa
    m[..., 1, 1] = -sg * cs + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sc
    m[..., 2, 1] = ss
    m[..., 2, 2] = cb
    return m


def matrix_to_euler(matrices: np.ndarray) -> np.ndarray:
    """Rotation matrices ``A`` (…, 3, 3) on (x, y, z) → RELION ZYZ Euler angles (…, 3) in degrees.

    Inverse of :func:`euler_to_matrix` (RELION's matrix is the transpose of SciPy's intrinsic ZYZ).
    """
    m = np.asarray(matrices, dtype=np.float64)
    flat = m.reshape(-1, 3, 3)
    eul = Rotation.from_matrix(np.transpose(flat, (0, 2, 1))).as_euler("ZYZ", degrees=True)
    return eul.reshape(m.shape[:-2] + (3,))


def xyz_to_zyx(matrices: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Re-express rotation matrices acting on (x, y, z) vectors for (z, y, x) vectors (and back)."""
    if isinstance(matrices, torch.Tensor):
        return matrices.flip(-1).flip(-2)
    return np.ascontiguousarray(np.asarray(matrices)[..., ::-1, ::-1])


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices (n, 3, 3) drawn uniformly from SO(3) with ``rng`` (any axis order)."""
    return Rotation.random(n, random_state=rng).as_matrix()


def rotation_about_y(theta_deg: float) -> np.ndarray:
    """Rotation by ``theta_deg`` about y, turning +x toward +z, as a matrix on (z, y, x) vectors."""
    t = np.deg2rad(theta_deg)
    c, s = np.cos(t), np.sin(t)
    # on (x, y, z): x' = c x - s z, z' = s x + c z  (turns +x toward +z)
    m_xyz = np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
    return xyz_to_zyx(m_xyz)  # type: ignore[return-value]


def box_center(shape: tuple[int, ...]) -> np.ndarray:
    """The rotation centre of a box, voxel ``N // 2`` along each axis (z, y, x)."""
    return np.array([n // 2 for n in shape], dtype=np.float64)


def rotate_volume(volume: np.ndarray, r_zyx: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Rotate a (z, y, x) volume actively by ``r_zyx`` about its centre: ``out(r) = in(R^T (r - c) + c)``."""
    r = np.asarray(r_zyx, dtype=np.float64)
    c = box_center(volume.shape)
    inv = r.T
    offset = c - inv @ c
    return ndimage.affine_transform(volume, inv, offset=offset, order=order, mode="grid-constant", cval=cval, prefilter=order > 1)


def rotate_volumes_torch(volumes: torch.Tensor, r_zyx: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Rotate a batch (B, C, D, H, W) actively by matrices (B, 3, 3) on (z, y, x) about voxel N//2.

    Differentiable, runs on any device (``torch.nn.functional.grid_sample``, zeros outside).
    """
    b, _, d, h, w = volumes.shape
    dev, dt = volumes.device, volumes.dtype
    axes = [torch.arange(n, device=dev, dtype=dt) - (n // 2) for n in (d, h, w)]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    coords = torch.stack([zz, yy, xx], dim=-1).reshape(-1, 3)  # (N, 3) output positions rel. centre
    src = coords @ r_zyx.to(dt)  # row-vector form of R^T r: (B, N, 3)
    centre = torch.tensor([d // 2, h // 2, w // 2], device=dev, dtype=dt)
    size = torch.tensor([d, h, w], device=dev, dtype=dt)
    norm = (src + centre) * 2.0 / (size - 1).clamp(min=1) - 1.0  # align_corners=True normalisation
    grid = norm.flip(-1).reshape(b, d, h, w, 3)  # grid_sample wants (x, y, z)
    return torch.nn.functional.grid_sample(volumes, grid, mode=mode, padding_mode="zeros", align_corners=True)
