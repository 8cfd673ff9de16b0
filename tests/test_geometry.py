"""Rotations: RELION Euler convention, scipy/torch rotation parity, tilt direction."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryorestore import geometry


def test_euler_matrix_is_relion_convention(rng):
    angles = rng.uniform(-180, 180, size=(20, 3))
    mats = geometry.euler_to_matrix(angles)
    # RELION's A is the transpose of the intrinsic ZYZ rotation (rot, tilt, psi)
    ref = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().transpose(0, 2, 1)
    assert np.allclose(mats, ref)
    # rot = 90 alone: A maps x onto -y (RELION: A(0,1) = sin(rot))
    assert np.allclose(geometry.euler_to_matrix(np.array([90.0, 0, 0])) @ [1, 0, 0], [0, -1, 0])
    assert np.allclose(geometry.euler_to_matrix(geometry.matrix_to_euler(mats)), mats)


def test_rotation_about_y_turns_x_toward_z():
    r = geometry.rotation_about_y(90.0)  # on (z, y, x)
    assert np.allclose(r @ np.array([0, 0, 1.0]), [1.0, 0, 0])


def test_rotate_volume_torch_matches_scipy(rng):
    vol = ndimage.gaussian_filter(rng.normal(size=(14, 16, 18)), 1.5)
    r = geometry.xyz_to_zyx(geometry.euler_to_matrix(np.array([20.0, 70.0, -35.0])))
    ref = geometry.rotate_volume(vol, r)
    got = geometry.rotate_volumes_torch(torch.from_numpy(vol)[None, None], torch.from_numpy(r)[None])[0, 0].numpy()
    assert np.allclose(got, ref, atol=1e-10)


def test_rotate_volume_moves_a_point_actively(rng):
    vol = np.zeros((21, 21, 21))
    vol[10, 10, 15] = 1.0  # +5 voxels along x from the centre
    r = geometry.rotation_about_y(90.0)
    out = geometry.rotate_volume(vol, r, order=1)
    assert np.unravel_index(out.argmax(), out.shape) == (15, 10, 10)  # now +5 along z


def test_random_rotations_are_rotations(rng):
    r = geometry.random_rotations(10, rng)
    assert np.allclose(r @ r.transpose(0, 2, 1), np.eye(3)) and np.allclose(np.linalg.det(r), 1)
