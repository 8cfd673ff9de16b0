"""Shared fixtures: small random maps written as MRC files, and a CLI runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cryorestore import io


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def write_map(tmp_path: Path):
    """Write an array as MRC under tmp_path and return its path."""

    def _write(name: str, data: np.ndarray, voxel_size: float = 10.0) -> Path:
        return io.write_mrc(tmp_path / name, data, voxel_size)

    return _write


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m cryorestore ARGS`` in a subprocess and capture its output."""
    return subprocess.run([sys.executable, "-m", "cryorestore", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def cli():
    return run_cli
