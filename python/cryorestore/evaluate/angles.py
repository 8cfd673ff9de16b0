"""Uniform rotation sampling for template matching and refinement.

Hopf-style sampling: a near-uniform set of directions on the sphere (a Fibonacci spiral with the
number of points chosen so that the mean spacing equals the angular step) times a uniform set of
in-plane angles with the same step. A direction (θ, φ) and an in-plane angle ψ are stored as RELION
ZYZ Euler angles (rot = φ, tilt = θ, psi = ψ); because the Haar measure in ZYZ Euler angles is
``sin(tilt) d rot d tilt d psi``, uniform directions × uniform ψ is uniform on SO(3).
For a 15° step this gives 183 directions × 24 in-plane angles = 4392 rotations.
"""

from __future__ import annotations

import math

import numpy as np

from cryorestore import geometry


def sphere_directions(step_deg: float) -> np.ndarray:
    """(M, 2) (tilt θ, rot φ) in degrees of a Fibonacci spiral with mean spacing ``step_deg``."""
    if not (0 < step_deg <= 180):
        raise ValueError(f"angular step must be in (0, 180] degrees, got {step_deg}")
    step = math.radians(step_deg)
    m = max(1, int(round(4.0 * math.pi / (step * step))))
    i = np.arange(m, dtype=np.float64) + 0.5
    cos_t = 1.0 - 2.0 * i / m
    theta = np.degrees(np.arccos(np.clip(cos_t, -1.0, 1.0)))
    golden = math.pi * (3.0 - math.sqrt(5.0))
    phi = np.degrees(np.mod(i * golden, 2 * math.pi))
    return np.stack([theta, phi], axis=1)


def uniform_eulers(step_deg: float) -> np.ndarray:
    """(R, 3) RELION Euler angles (rot, tilt, psi) in degrees covering SO(3) with ``step_deg`` spacing."""
    dirs = sphere_directions(step_deg)
    n_psi = max(1, int(round(360.0 / step_deg)))
    psi = np.arange(n_psi, dtype=np.float64) * (360.0 / n_psi)
    tilt = np.repeat(dirs[:, 0], n_psi)
    rot = np.repeat(dirs[:, 1], n_psi)
    return np.stack([rot, tilt, np.tile(psi, len(dirs))], axis=1)


def local_eulers(centre: np.ndarray, step_deg: float, n_steps: int = 1) -> np.ndarray:
    """Euler angles (K, 3) of rotations near ``centre`` (rot, tilt, psi in degrees).

    The set is ``A_centre`` composed with small rotations about the x, y, z axes of the particle frame
    by ``{−n … n}·step_deg`` each (a (2n+1)³ grid, the centre included first).
    """
    a0 = geometry.euler_to_matrix(np.asarray(centre, dtype=float))
    offs = np.arange(-n_steps, n_steps + 1, dtype=float) * step_deg
    from scipy.spatial.transform import Rotation

    grid = np.array(np.meshgrid(offs, offs, offs, indexing="ij")).reshape(3, -1).T
    order = np.argsort(np.abs(grid).sum(axis=1), kind="stable")
    small = Rotation.from_rotvec(np.radians(grid[order])).as_matrix()
    mats = small @ a0  # perturb in the frame the matrices act on
    return geometry.matrix_to_euler(mats)


def angular_distance(euler_a: np.ndarray, euler_b: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees between rotations given as Euler angles (broadcast over leading axes)."""
    a = geometry.euler_to_matrix(np.asarray(euler_a, dtype=float))
    b = geometry.euler_to_matrix(np.asarray(euler_b, dtype=float))
    tr = np.einsum("...ij,...ij->...", a, b)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))
