"""CryoET Data Portal: a pipeline samplesheet for the runs of one dataset, from the official client.

:func:`build_rows` asks the portal (through the ``cryoet-data-portal`` Python client, GraphQL over HTTP)
for a dataset's runs, their tomograms and their tilt series, and makes one samplesheet row per run:

* ``id,even,odd`` when the deposition has ``filtered_even`` and ``filtered_odd`` tomograms of the run
  (with the full tomogram of the chosen processing as ``full``, the raw map of the evaluation), else
* ``id,tomogram``: the run's single full tomogram of the chosen processing (``raw`` by default),

with the portal's voxel spacing (Å) as ``voxel_size``, the tilt range (degrees) of the run's tilt series
as ``tilt_min``/``tilt_max``, the dataset as ``group`` (split by row kind, voxel size and tilt range
when the runs differ, since one model needs one of each), the tomogram's S3 (or HTTPS) URL for
Nextflow to stage, and ``portal_dataset``/``portal_run``/``portal_tomograms`` for the provenance of
the restored maps. With ``file_format="zarr"`` (``--format zarr``) the rows carry the tomograms'
OME-Zarr store URLs (``s3_omezarr_dir``/``https_omezarr_dir``) instead of the MRC files; the pipeline
reads them with :mod:`cryorestore.volume_io`. :func:`write_sheet` writes it atomically.

Problems are :class:`~cryorestore.errors.InputError` with one line: the client is not installed, the
portal cannot be reached, the dataset is unknown, a run name is unknown, or no run has a matching
tomogram.
"""

from __future__ import annotations

import csv
import io as io_module
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from cryorestore import io
from cryorestore.errors import InputError

#: Processing kinds of a full tomogram in the portal schema (``tomogram_processing_enum`` less the halves).
PROCESSING = ("raw", "filtered", "denoised")
HALF_PROCESSING = ("filtered_even", "filtered_odd")
URL_KINDS = ("s3", "https")
#: File formats a sheet can point at: the portal's MRC files or its OME-Zarr stores (``*_omezarr_dir``).
FORMATS = ("mrc", "zarr")
#: Columns of the sheet :func:`write_sheet` writes (a subset of the samplesheet's columns).
SHEET_COLUMNS = ("id", "tomogram", "even", "odd", "full", "group", "voxel_size", "tilt_min", "tilt_max",
                 "portal_dataset", "portal_run", "portal_tomograms")
VOXEL_RTOL = 1e-3
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class SheetRow:
    """One run as a samplesheet row; ``values`` maps :data:`SHEET_COLUMNS` names to text."""

    run: str
    kind: str  # "halves" or "single"
    values: dict[str, str] = field(default_factory=dict)


def _client_module():
    try:
        import cryoet_data_portal
    except ImportError:
        raise InputError("the CryoET Data Portal client is not installed: pip install 'cryorestore[portal]' "
                         "(or pip install cryoet-data-portal)") from None
    return cryoet_data_portal


def make_client(url: str | None = None):
    """The official client (``cryoet_data_portal.Client``) for ``url`` (default: the portal's own endpoint)."""
    return _client_module().Client(url)


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean 'the portal did not answer' (connection, timeout, HTTP and transport errors)."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    try:
        import requests

        errors.append(requests.exceptions.RequestException)
    except ImportError:  # pragma: no cover - requests comes with gql's transport
        pass
    try:
        from gql.transport.exceptions import TransportError

        errors.append(TransportError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _ask(what: str, call: Callable[[], Any]) -> Any:
    """Run one portal query; a network or transport failure becomes a one-line InputError."""
    try:
        from gql.transport.exceptions import TransportQueryError
    except ImportError:  # pragma: no cover - gql comes with the client
        TransportQueryError = ()  # type: ignore[assignment]  # noqa: N806
    try:
        return call()
    except TransportQueryError as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"the CryoET Data Portal rejected the query for {what} ({first}); the installed "
                         f"cryoet-data-portal client may be out of date: pip install -U cryoet-data-portal") from None
    except _network_errors() as exc:
        text = str(exc)
        cause = re.search(r"Caused by (\w+)", text)  # urllib3's innermost reason, e.g. NameResolutionError
        reason = cause.group(1) if cause else ((text.splitlines() or [""])[0][:120] or "no answer")
        raise InputError(f"cannot reach the CryoET Data Portal while listing {what} ({type(exc).__name__}: {reason}); "
                         f"check the network connection and try again") from None


def _safe_id(name: str) -> str:
    """A run name as a samplesheet id (letters, digits, '.', '_', '-')."""
    text = _NAME_BAD.sub("_", name.strip()) or "run"
    return text if text[0].isalnum() else f"run{text}"


def _close(a: float, b: float) -> bool:
    return bool(np.isclose(a, b, rtol=VOXEL_RTOL))


def _pick(tomograms: Iterable[Any]) -> Any | None:
    """The one tomogram to use among several of one kind: portal standard first, then the visualisation
    default, then the lowest id (deterministic)."""
    ranked = sorted(tomograms, key=lambda t: (not t.is_portal_standard, not t.is_visualization_default, t.id))
    return ranked[0] if ranked else None


def _url(tomo: Any, kind: str, file_format: str = "mrc") -> str | None:
    if file_format == "zarr":
        return tomo.s3_omezarr_dir if kind == "s3" else tomo.https_omezarr_dir
    return tomo.s3_mrc_file if kind == "s3" else tomo.https_mrc_file


def _fmt(x: float) -> str:
    return f"{x:g}"


def build_rows(client: Any, dataset_id: int, runs: Iterable[str] | None = None, voxel_spacing: float | None = None,
               processing: str = "raw", url_kind: str = "s3", file_format: str = "mrc",
               note: Callable[[str], None] = lambda _m: None) -> list[SheetRow]:
    """One :class:`SheetRow` per run of dataset ``dataset_id`` that has a matching tomogram.

    ``runs``: run names to keep (default: all); ``voxel_spacing``: Å (default: the run's only spacing);
    ``processing``: the full tomogram's processing (:data:`PROCESSING`); ``url_kind``: ``s3`` or ``https``;
    ``file_format``: ``mrc`` (the MRC files) or ``zarr`` (the OME-Zarr stores; tomograms without one are
    left out).
    Runs left out (no matching tomogram, several voxel spacings) are reported through ``note``, one line
    each; an unknown dataset or run name, or no row at all, raises :class:`InputError`.
    """
    portal = _client_module()
    if processing not in PROCESSING:
        raise InputError(f"--processing {processing} is not one of {', '.join(PROCESSING)}")
    if url_kind not in URL_KINDS:
        raise InputError(f"--url {url_kind} is not one of {', '.join(URL_KINDS)}")
    if file_format not in FORMATS:
        raise InputError(f"--format {file_format} is not one of {', '.join(FORMATS)}")
    wanted = list(dict.fromkeys(runs or []))
    dataset = _ask(f"dataset {dataset_id}", lambda: portal.Dataset.get_by_id(client, int(dataset_id)))
    if dataset is None:
        raise InputError(f"dataset {dataset_id} is not on the CryoET Data Portal; check the id on cryoetdataportal.czscience.com")
    run_filter = [portal.Run.dataset_id == dataset.id]
    if wanted:
        run_filter.append(portal.Run.name._in(wanted))
    found = _ask(f"the runs of dataset {dataset.id}", lambda: portal.Run.find(client, run_filter))
    missing = [n for n in wanted if n not in {r.name for r in found}]
    if missing:
        raise InputError(f"dataset {dataset.id} has no run(s) named {', '.join(missing)}")
    if not found:
        raise InputError(f"dataset {dataset.id} has no runs on the CryoET Data Portal")
    run_ids = [r.id for r in sorted(found, key=lambda r: r.name)]
    tomos = _ask(f"the tomograms of dataset {dataset.id}",
                 lambda: portal.Tomogram.find(client, [portal.Tomogram.run_id._in(run_ids)]))
    series = _ask(f"the tilt series of dataset {dataset.id}",
                  lambda: portal.TiltSeries.find(client, [portal.TiltSeries.run_id._in(run_ids)]))
    tomos_of: dict[int, list[Any]] = defaultdict(list)
    for t in tomos:
        tomos_of[t.run_id].append(t)
    series_of: dict[int, list[Any]] = defaultdict(list)
    for s in series:
        series_of[s.run_id].append(s)

    rows: list[SheetRow] = []
    for run in sorted(found, key=lambda r: r.name):
        row = _run_row(dataset.id, run, tomos_of[run.id], series_of[run.id], voxel_spacing, processing, url_kind,
                       note, file_format)
        if row is not None:
            rows.append(row)
    if not rows:
        what = (f"{processing} tomogram" + (f" at {voxel_spacing:g} Å" if voxel_spacing else "")
                + (" as OME-Zarr" if file_format == "zarr" else ""))
        raise InputError(f"no run of dataset {dataset.id} has a {what} (nor filtered_even/filtered_odd halves); "
                         f"try another --processing or --voxel-spacing")
    _assign_groups(dataset.id, rows, note)
    return rows


def _run_row(dataset_id: int, run: Any, tomos: list[Any], series: list[Any], voxel_spacing: float | None,
             processing: str, url_kind: str, note: Callable[[str], None], file_format: str = "mrc") -> SheetRow | None:
    spacings = sorted({round(t.voxel_spacing, 3) for t in tomos})
    if voxel_spacing is not None:
        tomos = [t for t in tomos if _close(t.voxel_spacing, voxel_spacing)]
    elif len(spacings) > 1:
        note(f"run {run.name}: tomograms at several voxel spacings ({', '.join(map(_fmt, spacings))} Å); "
             f"left out, choose one with --voxel-spacing")
        return None
    with_url = [t for t in tomos if _url(t, url_kind, file_format)]
    by_kind = {k: [t for t in with_url if t.processing == k] for k in (processing, *HALF_PROCESSING)}
    full = _pick(by_kind[processing])
    even, odd = _pick(by_kind["filtered_even"]), _pick(by_kind["filtered_odd"])
    if even is not None and odd is not None and even.alignment_id != odd.alignment_id:
        even = odd = None  # halves of different alignments are not a pair
    if full is None and (even is None or odd is None):
        note(f"run {run.name}: no {processing} tomogram nor filtered_even/filtered_odd halves"
             + (f" at {voxel_spacing:g} Å" if voxel_spacing is not None else "")
             + (" as OME-Zarr" if file_format == "zarr" else "") + "; left out")
        return None
    values = {"id": _safe_id(run.name), "portal_dataset": str(dataset_id), "portal_run": run.name}
    if even is not None and odd is not None:
        used = [even, odd] + ([full] if full is not None else [])
        values.update(even=_url(even, url_kind, file_format), odd=_url(odd, url_kind, file_format),
                      full=_url(full, url_kind, file_format) if full is not None else "")
        kind = "halves"
    else:
        used = [full]
        values["tomogram"] = _url(full, url_kind, file_format)
        kind = "single"
    values["voxel_size"] = _fmt(used[0].voxel_spacing)
    values["portal_tomograms"] = ";".join(str(t.id) for t in used)
    ranges = sorted({(float(s.tilt_min), float(s.tilt_max)) for s in series})
    if len(ranges) == 1:
        values["tilt_min"], values["tilt_max"] = map(_fmt, ranges[0])
    else:
        note(f"run {run.name}: " + ("no tilt series" if not ranges else f"{len(ranges)} tilt series with different ranges")
             + " on the portal; tilt_min/tilt_max left empty (the pipeline's --tilt_min/--tilt_max apply)")
    return SheetRow(run.name, kind, values)


def _assign_groups(dataset_id: int, rows: list[SheetRow], note: Callable[[str], None]) -> None:
    """Group the dataset's runs: ``dataset_<id>``, split by row kind, voxel size and tilt range when they differ."""
    key_of = {id(r): (r.kind, r.values["voxel_size"], r.values.get("tilt_min", ""), r.values.get("tilt_max", ""))
              for r in rows}
    keys = sorted(set(key_of.values()))
    base = f"dataset_{dataset_id}"
    for r in rows:
        if len(keys) == 1:
            r.values["group"] = base
            continue
        kind, voxel, lo, hi = key_of[id(r)]
        tilt = f"_tilt{lo}_{hi}" if lo else ""
        r.values["group"] = _safe_id(f"{base}_{kind}_{voxel}A{tilt}")
    if len(keys) > 1:
        note(f"dataset {dataset_id}: runs differ in row kind, voxel size or tilt range; {len(keys)} training groups")


def write_sheet(rows: list[SheetRow], out: str) -> None:
    """Write the rows as a samplesheet (columns :data:`SHEET_COLUMNS`), atomically."""
    buf = io_module.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SHEET_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r.values.get(c, "") or "" for c in SHEET_COLUMNS})
    io.write_text(out, buf.getvalue())
