"""Provenance of restored maps, and the software versions the pipeline records.

:func:`write` puts a JSON file beside a restored map (``X.mrc`` → ``X.provenance.json``) that says where
the map came from and how, so that a result can be traced and deposited:

* ``source``: what the input was (e.g. CryoET Data Portal ``dataset``, ``run``, ``tomograms`` ids as the
  pipeline passes them with ``--source KEY=VALUE``) and ``files``: every input map with its size in bytes;
* ``method``, ``model``, ``loss``, ``model_options``, ``tilt_range`` (degrees) and the training inputs, read
  from the model directory's ``config.json``, with the SHA-256 of its ``weights.pt``;
* ``output``: the map's file name, shape (z, y, x) and voxel size (Å); ``reading``: the inputs' OME-Zarr
  level and binning factor;
* ``software``: cryorestore, torch, numpy and Python versions; ``command``: the command line; ``created``.

``python -m cryorestore.provenance versions PROCESS [PACKAGE ...]`` prints the ``versions.yml`` block of a
pipeline task (``bin/cryorestore-versions`` calls it).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from cryorestore import __version__, io
from cryorestore.errors import InputError

FORMAT = "cryorestore-provenance/1"
#: Training settings copied from a model directory's config.json into the provenance.
MODEL_KEYS = ("method", "model", "loss", "model_options", "tilt_range", "epochs", "subtomo_size", "n_subtomos",
              "seed", "even", "odd")


def provenance_path(out_map: str | os.PathLike) -> Path:
    """The provenance file of a map: ``X.mrc`` (or ``X.zarr``) → ``X.provenance.json`` (same folder)."""
    p = Path(str(out_map).rstrip("/"))
    return p.with_name(f"{p.stem}.provenance.json")


def parse_source(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings (``--source``) → dict; a malformed item is an :class:`InputError`."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--source '{item}' is not KEY=VALUE (e.g. dataset=10000)")
        out[key.strip()] = value.strip()
    return out


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: ``cryorestore ARGS`` (or ``python -m cryorestore ARGS``), shell-quoted."""
    argv = list(sys.argv if argv is None else argv)
    head = Path(argv[0]).name if argv else "cryorestore"
    prog = ["python", "-m", "cryorestore"] if head == "__main__.py" else [head]
    return shlex.join(prog + argv[1:])


def software_versions(packages: Iterable[str] = ("torch", "numpy")) -> dict[str, str]:
    """Versions of cryorestore, Python and ``packages`` (``not installed`` where missing)."""
    out = {"cryorestore": __version__, "python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_summary(model_dir: str | os.PathLike) -> dict[str, Any]:
    """What the provenance says about a model directory: its training settings and weights checksum."""
    d = Path(model_dir)
    cfg_path = d / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{cfg_path} is not a readable model config ({exc})") from None
    summary = {k: config[k] for k in MODEL_KEYS if k in config}
    summary["model_dir"] = str(d.resolve())
    weights = d / "weights.pt"
    if weights.is_file():
        summary["weights_sha256"] = _sha256(weights)
    return summary


def _file_entry(p: str) -> dict[str, Any]:
    """``path`` and ``bytes`` of a local input (a file, or a folder such as an OME-Zarr store: the sum of its
    files), or ``url`` for a remote store."""
    from cryorestore import volume_io

    if volume_io.is_remote(p):
        return {"url": str(p)}
    path = Path(p)
    size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"path": str(path.resolve()), "bytes": size}


def build(out_map: str | os.PathLike, model_dir: str | os.PathLike, inputs: Mapping[str, str | None],
          source: Mapping[str, str] | None = None, command: str | None = None,
          reading: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of ``out_map`` (an MRC file or OME-Zarr store already written) restored with
    ``model_dir`` from ``inputs``; ``reading``: how the inputs were read (e.g. ``zarr_level``, ``bin``)."""
    from cryorestore import volume_io

    shape, voxel = volume_io.volume_header(out_map)
    files = {role: _file_entry(str(p)) for role, p in inputs.items() if p}
    model = model_summary(model_dir)
    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "output": {"file": Path(out_map).name, "shape_zyx": list(shape), "voxel_size_A": voxel},
        "source": {**dict(source or {}), "files": files},
        "reading": dict(reading or {"zarr_level": 0, "bin": 1}),
        "method": model.get("method"),
        "model": model.get("model"),
        "training": model,
        "software": software_versions(),
        "command": command if command is not None else command_line(),
        "cwd": os.getcwd(),
    }


def write(out_map: str | os.PathLike, model_dir: str | os.PathLike, inputs: Mapping[str, str | None],
          source: Mapping[str, str] | None = None, command: str | None = None,
          reading: Mapping[str, Any] | None = None) -> Path:
    """Write :func:`build`'s record beside ``out_map`` (atomically) and return its path."""
    record = build(out_map, model_dir, inputs, source, command, reading)
    return io.write_text(provenance_path(out_map), json.dumps(record, indent=2) + "\n")


def versions_yaml(process: str, packages: Iterable[str] = ()) -> str:
    """The ``versions.yml`` block of one pipeline task: cryorestore and ``packages`` under ``"PROCESS":``."""
    versions = software_versions(packages)
    lines = [f'"{process}":', f"    cryorestore: {versions['cryorestore']}"]
    lines += [f"    {name}: {versions[name]}" for name in packages]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m cryorestore.provenance versions PROCESS [PACKAGE ...]``: print a task's versions.yml."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "versions":
        print("usage: python -m cryorestore.provenance versions PROCESS [PACKAGE ...]", file=sys.stderr)
        return 2
    sys.stdout.write(versions_yaml(args[1], args[2:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
