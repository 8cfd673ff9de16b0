"""Pipeline samplesheet validation: one row per tomogram (or CryoET Data Portal run).

A sheet is a CSV with a header. Each row is one of three kinds (``mode`` in the normalised sheet):

* ``id,even,odd`` — the even and odd half tomograms (T2T or F2F split): ``halves``;
* ``id,tilt_series,angles`` — an aligned tilt series (MRC) and its tilt angles (``.tlt``, degrees),
  reconstructed into full/even/odd by the pipeline: ``tilt_series``;
* ``id,tomogram`` — one full tomogram and no halves (most CryoET Data Portal runs): ``single``; the
  pipeline trains a single-map method on it,

with optional columns ``group`` (rows of one group train one shared model; default: the row's own id),
``voxel_size`` (Å; default: read from the MRC header when the file is local), ``full`` (the full
tomogram, used as the raw map in the evaluation), ``particles`` (STAR) and ``template`` (MRC) for
template matching in the evaluation, ``tilt_min``/``tilt_max`` (the row's tilt range in degrees; for
tilt-series rows with a local angles file, filled from it), and ``portal_dataset``, ``portal_run``,
``portal_tomograms`` (CryoET Data Portal dataset id, run name and tomogram ids, ``;``-separated),
recorded in the provenance of the restored map.

A training group has one row kind (half sets, which tilt-series rows become, or single maps), one
voxel size and one tilt range: rows of a group with different ranges are an error, and rows without
a range take the range of the group's other rows.

Tomogram columns (``even``, ``odd``, ``tomogram``, ``full``) take MRC files or OME-Zarr stores (``.zarr``
folders or URLs, as ``cryorestore portal sheet --format zarr`` writes them); ``tilt_series`` and
``template`` are MRC. Paths are local files or folders (relative paths are taken from ``base_dir``, as
Nextflow takes them from its launch folder) or URLs that Nextflow stages (``s3://``, ``gs://``, ``az://``, ``https://``,
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

from cryorestore import io, volume_io
from cryorestore.errors import InputError

HALVES = ("even", "odd")
TILTS = ("tilt_series", "angles")
SINGLE = ("tomogram",)
TILT_RANGE = ("tilt_min", "tilt_max")
PORTAL = ("portal_dataset", "portal_run", "portal_tomograms")
OPTIONAL = ("group", "voxel_size", "full", "particles", "template", *TILT_RANGE, *PORTAL)
ALLOWED = ("id", *HALVES, *TILTS, *SINGLE, *OPTIONAL)
#: Columns of the normalised sheet written by :func:`write_valid`, in order.
VALID_COLUMNS = ("id", "group", "mode", "voxel_size", "tilt_min", "tilt_max", "even", "odd", "tilt_series",
                 "angles", "tomogram", "full", "particles", "template", *PORTAL)
#: Row kinds (``mode``) and the kind of training they need: half sets or a single map.
TRAINING_KIND = {"halves": "half sets", "tilt_series": "half sets", "single": "single maps"}
#: Largest difference (degrees) between a tilt_min/tilt_max column and the angles file's extremes.
TILT_TOL = 0.5
URL_SCHEMES = ("s3://", "gs://", "az://", "https://", "http://", "ftp://")
MRC_SUFFIXES = (".mrc", ".rec", ".st", ".ali", ".map", ".mrcs")
#: Tomogram columns also take OME-Zarr stores (a local ``.zarr`` folder or a URL), read by cryorestore.volume_io.
MAP_SUFFIXES = (*MRC_SUFFIXES, ".zarr")
SUFFIXES = {
    "even": MAP_SUFFIXES, "odd": MAP_SUFFIXES, "tilt_series": MRC_SUFFIXES, "full": MAP_SUFFIXES,
    "template": MRC_SUFFIXES, "tomogram": MAP_SUFFIXES, "angles": (".tlt", ".rawtlt", ".txt"),
    "particles": (".star",),
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VOXEL_RTOL = 1e-3


@dataclass
class Row:
    """One valid sheet row: ``paths`` maps column name to a resolved local path or a URL."""

    line: int
    id: str
    group: str
    mode: str  # "halves", "tilt_series" or "single"
    paths: dict[str, str] = field(default_factory=dict)
    voxel_size: float | None = None
    tilt_range: tuple[float, float] | None = None  # degrees
    portal: dict[str, str] = field(default_factory=dict)


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
    if (TILT_RANGE[0] in header) != (TILT_RANGE[1] in header):
        have, miss = TILT_RANGE if TILT_RANGE[0] in header else TILT_RANGE[::-1]
        raise InputError(f"{path}: the header has '{have}' but not '{miss}'; both are needed")
    if not (all(c in header for c in HALVES) or all(c in header for c in TILTS) or SINGLE[0] in header):
        raise InputError(f"{path}: the header needs the columns even,odd (half tomograms), tilt_series,angles "
                         f"or tomogram (one full map); got {','.join(header)}")


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
        mode, err = _row_mode(rec)
        if err:
            errs.append(err)
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
        tilt, err = _tilt_columns(rec)
        if err:
            errs.append(err)
        portal, err = _portal_columns(rec)
        if err:
            errs.append(err)
        if mode == "single" and rec.get("full"):
            errs.append("a tomogram row has no 'full' column: its tomogram is the raw map")
        paths: dict[str, str] = {}
        kind_columns = {"halves": HALVES, "tilt_series": TILTS, "single": SINGLE}.get(mode, ())
        used = kind_columns + (() if mode == "single" else ("full",)) + ("particles", "template")
        for col in used:
            text = rec.get(col, "")
            if not text:
                continue
            if _suffix(text) not in SUFFIXES[col]:
                errs.append(f"{col} '{text}' should end in {'/'.join(SUFFIXES[col])}")
                continue
            resolved = _resolve(text, base)
            is_store = _suffix(text) == ".zarr"
            if check_files and not is_url(resolved) and not (Path(resolved).is_dir() if is_store
                                                             else Path(resolved).is_file()):
                errs.append(f"{col} {'OME-Zarr store' if is_store else 'file'} {resolved} does not exist")
                continue
            paths[col] = resolved
        if check_files and not errs:
            errs.extend(_check_headers(paths, mode, voxel))
            if voxel is None:
                voxel = _header_voxel(paths, mode)
            if not errs and mode == "tilt_series" and not is_url(paths["angles"]):
                tilt, err = _tilt_from_angles(paths["angles"], tilt)
                if err:
                    errs.append(err)
        if errs:
            problems.append(f"{where}: " + "; ".join(errs))
            continue
        rows.append(Row(lineno, sid, group, mode, paths, voxel, tilt, portal))
    if not records:
        problems.append(f"{path.name}: no rows under the header; add one row per tomogram")
    problems.extend(_check_groups(path, rows, explicit))
    return rows, problems


def _row_mode(rec: dict[str, str]) -> tuple[str, str]:
    """(mode, error) of a row from which of even,odd / tilt_series,angles / tomogram it fills."""
    halves = [rec.get(c, "") for c in HALVES]
    tilts = [rec.get(c, "") for c in TILTS]
    single = rec.get(SINGLE[0], "")
    kinds = [name for name, filled in (("even,odd", any(halves)), ("tilt_series,angles", any(tilts)),
                                       ("tomogram", bool(single))) if filled]
    if len(kinds) > 1:
        return "", f"fill one of even,odd / tilt_series,angles / tomogram, not {' and '.join(kinds)}"
    if all(halves):
        return "halves", ""
    if all(tilts):
        return "tilt_series", ""
    if single:
        return "single", ""
    if kinds:
        filled = [c for c in (*HALVES, *TILTS) if rec.get(c)]
        return "", f"has only {','.join(filled)}; give both even and odd, or both tilt_series and angles"
    return "", "has no even,odd nor tilt_series,angles nor tomogram"


def _tilt_columns(rec: dict[str, str]) -> tuple[tuple[float, float] | None, str]:
    """(tilt range, error) from the tilt_min/tilt_max columns (both empty: no range)."""
    from cryorestore.fourier import check_tilt_range

    texts = [rec.get(c, "") for c in TILT_RANGE]
    if not any(texts):
        return None, ""
    if not all(texts):
        return None, "give both tilt_min and tilt_max (degrees) or neither"
    try:
        lo, hi = (float(t) for t in texts)
    except ValueError:
        return None, f"tilt_min/tilt_max '{texts[0]}'/'{texts[1]}' are not numbers of degrees"
    try:
        check_tilt_range(lo, hi)
    except InputError as exc:
        return None, str(exc)
    return (lo, hi), ""


def _tilt_from_angles(path: str, given: tuple[float, float] | None) -> tuple[tuple[float, float] | None, str]:
    """The range of a local angles file; an error if the tilt_min/tilt_max columns disagree with it."""
    try:
        angles = io.read_tlt(path)
    except InputError as exc:
        return given, str(exc)
    found = (float(np.min(angles)), float(np.max(angles)))
    if given is not None and max(abs(a - b) for a, b in zip(given, found)) > TILT_TOL:
        return given, (f"tilt_min/tilt_max {given[0]:g}/{given[1]:g} disagree with the angles file "
                       f"({found[0]:g} to {found[1]:g} degrees); fix the columns or leave them empty")
    return (given or found), ""


def _portal_columns(rec: dict[str, str]) -> tuple[dict[str, str], str]:
    """(portal provenance, error): portal_dataset an integer, portal_tomograms ';'-separated integers."""
    out = {c: rec[c] for c in PORTAL if rec.get(c)}
    ids = [out.get("portal_dataset", "0"), *out.get("portal_tomograms", "0").split(";")]
    if not all(t.strip().isdigit() for t in ids):
        return out, "portal_dataset and portal_tomograms must be portal ids (integers; tomograms ';'-separated)"
    return out, ""


def _main_mrc(paths: dict[str, str], mode: str) -> str | None:
    key = {"halves": "even", "tilt_series": "tilt_series", "single": "tomogram"}[mode]
    p = paths.get(key)
    return None if p is None or is_url(p) else p


def _header_voxel(paths: dict[str, str], mode: str) -> float | None:
    p = _main_mrc(paths, mode)
    return None if p is None else volume_io.volume_header(p)[1]


def _check_headers(paths: dict[str, str], mode: str, voxel: float | None) -> list[str]:
    """Header checks for the local maps of one row (MRC headers, OME-Zarr level-0 metadata): readable, even/odd
    on one grid, voxel size agrees."""
    errs: list[str] = []
    headers: dict[str, tuple[tuple[int, int, int], float]] = {}
    for col in ("even", "odd", "tilt_series", "tomogram", "full"):
        p = paths.get(col)
        if p is None or is_url(p):
            continue
        try:
            headers[col] = volume_io.volume_header(p)
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
    main = {"halves": "even", "tilt_series": "tilt_series", "single": "tomogram"}[mode]
    # read_mrc_header reports an unset (0) header voxel size as 1.0 Å: only a set one can disagree.
    if voxel is not None and main in headers and headers[main][1] != 1.0 \
            and not np.isclose(headers[main][1], voxel, rtol=VOXEL_RTOL):
        errs.append(f"voxel_size {voxel:g} Å disagrees with the {main} header ({headers[main][1]:g} Å)")
    return errs


def _check_groups(path: Path, rows: list[Row], explicit: set[str]) -> list[str]:
    """Rows trained together need one row kind, one voxel size and one tilt range; a group name may not
    capture another row's id. Rows without a tilt range take their group's (set in place).

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
        kinds = [r for r in members if TRAINING_KIND[r.mode] != TRAINING_KIND[members[0].mode]]
        for r in kinds[:1]:
            ref = members[0]
            problems.append(
                f"{path.name} line {r.line} ({r.id}): a {r.mode} row in group '{name}' with the {ref.mode} row of "
                f"line {ref.line} ({ref.id}); a shared model trains on {TRAINING_KIND[ref.mode]} only, so give "
                f"them different groups"
            )
        ranged = [r for r in members if r.tilt_range is not None]
        for r in ranged[1:]:
            ref = ranged[0]
            if max(abs(a - b) for a, b in zip(r.tilt_range, ref.tilt_range)) > 1e-6:
                problems.append(
                    f"{path.name} line {r.line} ({r.id}): tilt range {r.tilt_range[0]:g} to {r.tilt_range[1]:g} "
                    f"degrees differs from {ref.tilt_range[0]:g} to {ref.tilt_range[1]:g} of line {ref.line} "
                    f"({ref.id}) in group '{name}'; a shared model needs one tilt range, so split the group"
                )
        if ranged:
            for r in members:
                r.tilt_range = r.tilt_range or ranged[0].tilt_range
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
                  "voxel_size": "" if r.voxel_size is None else f"{r.voxel_size:g}", **r.paths, **r.portal}
        if r.tilt_range is not None:
            values.update(tilt_min=f"{r.tilt_range[0]:g}", tilt_max=f"{r.tilt_range[1]:g}")
        writer.writerow({c: values.get(c, "") for c in VALID_COLUMNS})
    return io.write_text(out, buf.getvalue())
