"""Pipeline samplesheet validation: one row per tomogram (or CryoET Data Portal run).

A sheet is a CSV with a header. Each row is either

* ``id,even,odd`` — the even and odd half tomograms (T2T or F2F split), or
* ``id,tilt_series,angles`` — an aligned tilt series (MRC) and its tilt angles (``.tlt``, degrees),
  reconstructed into full/even/odd by the pipeline,

with optional columns ``group`` (rows of one group train one shared model; default: the row's own id),
``voxel_size`` (Å; default: read from the MRC header when the file is local), ``full`` (the full
tomogram, used as the raw map in the evaluation), ``particles`` (STAR) and ``template`` (MRC) for
template matching in the evaluation.

Paths are local files (relative paths are taken from ``base_dir``, as Nextflow takes them from its
launch folder) or URLs that Nextflow stages (``s3://``, ``gs://``, ``az://``, ``https://``,
``http://``, ``ftp://``); URLs are not checked for existence here.

:func:`validate` collects every problem, one line per bad row; :func:`check` raises
:class:`~cryorestore.errors.InputError` when there is any. :func:`write_valid` writes the normalised
sheet the pipeline reads (fixed columns, absolute local paths, group and voxel size filled in).
"""

from __future__ import annotations

import csv
import io as io_module
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cryorestore import io
from cryorestore.errors import InputError

HALVES = ("even", "odd")
TILTS = ("tilt_series", "angles")
OPTIONAL = ("group", "voxel_size", "full", "particles", "template")
ALLOWED = ("id", *HALVES, *TILTS, *OPTIONAL)
#: Columns of the normalised sheet written by :func:`write_valid`, in order.
VALID_COLUMNS = ("id", "group", "mode", "voxel_size", "even", "odd", "tilt_series", "angles",
                 "full", "particles", "template")
URL_SCHEMES = ("s3://", "gs://", "az://", "https://", "http://", "ftp://")
MRC_SUFFIXES = (".mrc", ".rec", ".st", ".ali", ".map", ".mrcs")
SUFFIXES = {
    "even": MRC_SUFFIXES, "odd": MRC_SUFFIXES, "tilt_series": MRC_SUFFIXES, "full": MRC_SUFFIXES,
    "template": MRC_SUFFIXES, "angles": (".tlt", ".rawtlt", ".txt"), "particles": (".star",),
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VOXEL_RTOL = 1e-3


@dataclass
class Row:
    """One valid sheet row: ``paths`` maps column name to a resolved local path or a URL."""

    line: int
    id: str
    group: str
    mode: str  # "halves" or "tilt_series"
    paths: dict[str, str] = field(default_factory=dict)
    voxel_size: float | None = None


def is_url(text: str) -> bool:
    """True for a URL Nextflow stages itself (s3://, gs://, az://, https://, http://, ftp://)."""
    return text.lower().startswith(URL_SCHEMES)


def _suffix(text: str) -> str:
    name = text.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""


def _read(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    if not path.is_file():
        raise InputError(f"samplesheet {path} does not exist: check the path")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [(reader.line_num, r) for r in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a readable CSV file ({exc})") from None
    rows = [(n, r) for n, r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{path} is empty; it needs a header line and one row per tomogram")
    header = [c.strip() for c in rows[0][1]]
    records = []
    for lineno, values in rows[1:]:
        if len(values) != len(header):
            records.append((lineno, {"__ncols__": str(len(values))}))
            continue
        records.append((lineno, {k: v.strip() for k, v in zip(header, values)}))
    return header, records


def _check_header(path: Path, header: list[str]) -> None:
    unknown = [c for c in header if c not in ALLOWED]
    if unknown:
        raise InputError(f"{path}: unknown column(s) {', '.join(repr(c) for c in unknown)}; allowed: {', '.join(ALLOWED)}")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise InputError(f"{path}: column(s) {', '.join(dup)} appear more than once in the header")
    if "id" not in header:
        raise InputError(f"{path}: the header has no 'id' column; it needs id,even,odd or id,tilt_series,angles")
    for a, b in (HALVES, TILTS):
        if (a in header) != (b in header):
            have, miss = (a, b) if a in header else (b, a)
            raise InputError(f"{path}: the header has '{have}' but not '{miss}'; both are needed")
    if not (all(c in header for c in HALVES) or all(c in header for c in TILTS)):
        raise InputError(f"{path}: the header needs the columns even,odd (half tomograms) or tilt_series,angles; got {','.join(header)}")


def _resolve(text: str, base_dir: Path) -> str:
    if is_url(text):
        return text
    p = Path(text).expanduser()
    return str((p if p.is_absolute() else base_dir / p).resolve())


def validate(path: str | Path, base_dir: str | Path | None = None,
             check_files: bool = True) -> tuple[list[Row], list[str]]:
    """Validate a samplesheet; return (valid rows, one message per bad row).

    Header problems (unknown, duplicate or missing columns, an empty sheet) raise
    :class:`InputError` at once: no row can be read without a good header.
    ``base_dir`` (default: the current folder) anchors relative local paths. With ``check_files``
    local files must exist and their MRC headers are read (voxel size, even/odd shapes).
    """
    path = Path(path)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    header, records = _read(path)
    _check_header(path, header)
    problems: list[str] = []
    rows: list[Row] = []
    first_line_of_id: dict[str, int] = {}
    explicit: set[str] = set()
    for lineno, rec in records:
        where = f"{path.name} line {lineno}"
        if "__ncols__" in rec:
            problems.append(f"{where}: has {rec['__ncols__']} fields but the header has {len(header)}")
            continue
        sid = rec.get("id", "")
        where = f"{where} ({sid or 'no id'})"
        errs: list[str] = []
        if not sid:
            errs.append("the id is empty")
        elif not NAME_RE.match(sid):
            errs.append(f"id '{sid}' may hold only letters, digits, '.', '_' and '-' (it names output files)")
        elif sid in first_line_of_id:
            errs.append(f"id '{sid}' is already used on line {first_line_of_id[sid]}; ids must be unique")
        else:
            first_line_of_id[sid] = lineno
        halves = [rec.get(c, "") for c in HALVES]
        tilts = [rec.get(c, "") for c in TILTS]
        mode = ""
        if all(halves) and any(tilts):
            errs.append("fill either even,odd or tilt_series,angles, not both")
        elif all(halves):
            mode = "halves"
        elif all(tilts):
            mode = "tilt_series"
        elif any(halves) or any(tilts):
            filled = [c for c in (*HALVES, *TILTS) if rec.get(c)]
            errs.append(f"has only {','.join(filled)}; give both even and odd, or both tilt_series and angles")
        else:
            errs.append("has no even,odd nor tilt_series,angles")
        group = rec.get("group", "") or sid
        if rec.get("group"):
            explicit.add(sid)
        if rec.get("group") and not NAME_RE.match(rec["group"]):
            errs.append(f"group '{rec['group']}' may hold only letters, digits, '.', '_' and '-'")
        voxel: float | None = None
        if rec.get("voxel_size"):
            try:
                voxel = float(rec["voxel_size"])
            except ValueError:
                voxel = float("nan")
            if not (np.isfinite(voxel) and voxel > 0):
                errs.append(f"voxel_size '{rec['voxel_size']}' is not a positive number of Å")
                voxel = None
        paths: dict[str, str] = {}
        used = (HALVES if mode == "halves" else TILTS if mode == "tilt_series" else ()) + ("full", "particles", "template")
        for col in used:
            text = rec.get(col, "")
            if not text:
                continue
            if _suffix(text) not in SUFFIXES[col]:
                errs.append(f"{col} '{text}' should end in {'/'.join(SUFFIXES[col])}")
                continue
            resolved = _resolve(text, base)
            if check_files and not is_url(resolved) and not Path(resolved).is_file():
                errs.append(f"{col} file {resolved} does not exist")
                continue
            paths[col] = resolved
        if check_files and not errs:
            errs.extend(_check_headers(paths, mode, voxel))
            if voxel is None:
                voxel = _header_voxel(paths, mode)
        if errs:
            problems.append(f"{where}: " + "; ".join(errs))
            continue
        rows.append(Row(lineno, sid, group, mode, paths, voxel))
    if not records:
        problems.append(f"{path.name}: no rows under the header; add one row per tomogram")
    problems.extend(_check_groups(path, rows, explicit))
    return rows, problems


def _main_mrc(paths: dict[str, str], mode: str) -> str | None:
    key = "even" if mode == "halves" else "tilt_series"
    p = paths.get(key)
    return None if p is None or is_url(p) else p


def _header_voxel(paths: dict[str, str], mode: str) -> float | None:
    p = _main_mrc(paths, mode)
    return None if p is None else io.read_mrc_header(p)[1]


def _check_headers(paths: dict[str, str], mode: str, voxel: float | None) -> list[str]:
    """Header checks for local MRC files of one row: readable, even/odd on one grid, voxel size agrees."""
    errs: list[str] = []
    headers: dict[str, tuple[tuple[int, int, int], float]] = {}
    for col in ("even", "odd", "tilt_series", "full"):
        p = paths.get(col)
        if p is None or is_url(p):
            continue
        try:
            headers[col] = io.read_mrc_header(p)
        except InputError as exc:
            errs.append(str(exc))
    if errs:
        return errs
    grid = [c for c in ("even", "odd", "full") if c in headers]
    for c in grid[1:]:
        (sa, va), (sb, vb) = headers[grid[0]], headers[c]
        if sa != sb:
            errs.append(f"{c} has shape {sb} but {grid[0]} has {sa}; they must match voxel for voxel")
        elif not np.isclose(va, vb, rtol=VOXEL_RTOL):
            errs.append(f"{c} has voxel size {vb:g} Å but {grid[0]} has {va:g} Å")
    main = "even" if mode == "halves" else "tilt_series"
    # read_mrc_header reports an unset (0) header voxel size as 1.0 Å: only a set one can disagree.
    if voxel is not None and main in headers and headers[main][1] != 1.0 \
            and not np.isclose(headers[main][1], voxel, rtol=VOXEL_RTOL):
        errs.append(f"voxel_size {voxel:g} Å disagrees with the {main} header ({headers[main][1]:g} Å)")
    return errs


def _check_groups(path: Path, rows: list[Row], explicit: set[str]) -> list[str]:
    """Rows trained together need one voxel size; a group name may not capture another row's id.

    ``explicit`` holds the ids of rows whose group was given in the sheet (not defaulted to the id).
    """
    problems: list[str] = []
    by_group: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_group[r.group].append(r)
    for name, members in by_group.items():
        if len(members) < 2:
            continue
        for r in members:
            if r.id == name and r.id not in explicit:
                problems.append(f"{path.name} line {r.line} ({r.id}): id '{r.id}' is also the group of other rows; "
                                f"rename that group or set this row's group to '{name}' to train it with them")
        known = [r for r in members if r.voxel_size is not None]
        for r in known[1:]:
            ref = known[0]
            if not np.isclose(r.voxel_size, ref.voxel_size, rtol=VOXEL_RTOL):
                problems.append(
                    f"{path.name} line {r.line} ({r.id}): voxel size {r.voxel_size:g} Å differs from "
                    f"{ref.voxel_size:g} Å of line {ref.line} ({ref.id}) in group '{name}'; "
                    f"a shared model needs one voxel size"
                )
    return problems


def check(path: str | Path, base_dir: str | Path | None = None, check_files: bool = True) -> list[Row]:
    """Validate a sheet; raise :class:`InputError` naming the number of bad rows if there is any.

    The per-row messages are attached as ``exc.problems`` (the CLI prints one line each).
    """
    rows, problems = validate(path, base_dir, check_files)
    if problems:
        exc = InputError(f"{len(problems)} problem(s) in {Path(path).name}; fix the row(s) above")
        exc.problems = problems  # type: ignore[attr-defined]
        raise exc
    return rows


def write_valid(rows: list[Row], out: str | Path) -> Path:
    """Write the normalised sheet (columns :data:`VALID_COLUMNS`) atomically."""
    buf = io_module.StringIO()
    writer = csv.DictWriter(buf, fieldnames=VALID_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        values = {"id": r.id, "group": r.group, "mode": r.mode,
                  "voxel_size": "" if r.voxel_size is None else f"{r.voxel_size:g}", **r.paths}
        writer.writerow({c: values.get(c, "") for c in VALID_COLUMNS})
    return io.write_text(out, buf.getvalue())
