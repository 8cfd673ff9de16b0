"""Gather one or many run directories into a single self-contained ``report.html``.

A run directory is what ``denoise --out-dir`` writes (``restored.mrc``, ``metrics.json`` with the raw
map's path under ``inputs``, ``model/``), optionally with ``match/``, ``average/``, ``segment/``,
``figures/`` sub-folders from the other commands. Every ``metrics.json`` found (the run's own and one
level of sub-folders) becomes rows of one table (runs as columns; nested keys joined with ``.``; lists
are left out); for each run whose metrics hold ``<figure>_<map>`` keys of two or more maps (raw, the
``gaussian``/``wiener`` baselines, restored: see ``cryorestore evaluate --baselines``) a second table
shows those maps side by side (the truth-free score's ``tf_*`` keys in a table of their own, first:
alone on real data, beside the truth-based table on simulated data); every PNG below the run directory is inlined as base64. When a run has ``restored.mrc``
but no orthoslice figure, orthoslices and Fourier slices of the raw (if its path resolves) and restored
maps are drawn on the fly. The HTML references no external file.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryorestore import io
from cryorestore.errors import InputError


@dataclass
class Run:
    """What one run directory holds: name, flattened scalar metrics, PNG images (caption → bytes)."""

    name: str
    path: Path
    metrics: dict[str, object] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)


def flatten(doc: object, prefix: str = "") -> dict[str, object]:
    """Scalars (numbers, booleans, short strings) of a JSON document with dotted keys; lists dropped."""
    out: dict[str, object] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                # a top-level "metrics" block is the main table: do not prefix its keys
                out.update(flatten(v, "" if (k == "metrics" and not prefix) else f"{key}."))
            elif isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) < 200) or v is None:
                out[key] = v
    return out


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON ({type(exc).__name__}); re-run the command that wrote it") from None
    return doc if isinstance(doc, dict) else {}


def _resolve(path_text: object, run_dir: Path) -> Path | None:
    if not isinstance(path_text, str) or not path_text:
        return None
    for cand in (Path(path_text), run_dir / path_text, Path.cwd() / path_text):
        if cand.is_file() or (cand.is_dir() and cand.suffix == ".zarr"):
            return cand
    return None


def _raw_map(doc: dict, run_dir: Path):
    """The raw map named in metrics.json ``inputs`` (raw, or the mean of even and odd), or None; read at the
    run's ``zarr_level`` and ``bin`` (``denoise`` records them), so that it lies on the restored map's grid."""
    import numpy as np

    from cryorestore import volume_io

    level, factor = int(doc.get("zarr_level", 0) or 0), int(doc.get("bin", 1) or 1)

    def read(path: Path) -> np.ndarray:
        return volume_io.read_volume(path, level, factor).data

    inputs = doc.get("inputs", {}) if isinstance(doc.get("inputs"), dict) else {}
    p = _resolve(inputs.get("raw"), run_dir)
    if p is not None:
        return read(p)
    even, odd = _resolve(inputs.get("even"), run_dir), _resolve(inputs.get("odd"), run_dir)
    if even is not None and odd is not None:
        return 0.5 * (read(even) + read(odd)).astype(np.float32)
    return None


def collect_run(run_dir: str | Path) -> Run:
    """Read metrics and images of one run directory (see module docstring)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise InputError(f"run directory {d} does not exist")
    run = Run(d.name or str(d), d)
    top = d / "metrics.json"
    doc = _read_json(top) if top.is_file() else {}
    run.metrics.update(flatten(doc))
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        mj = sub / "metrics.json"
        if mj.is_file():
            run.metrics.update(flatten(_read_json(mj), f"{sub.name}."))
    for png in sorted(d.rglob("*.png")):
        run.images[str(png.relative_to(d))] = png.read_bytes()
    restored = d / "restored.mrc" if (d / "restored.mrc").is_file() else d / "restored.zarr"
    if restored.exists() and not any("orthoslices" in k for k in run.images):
        from cryorestore import plots, volume_io

        maps = {}
        raw = _raw_map(doc, d)
        if raw is not None:
            maps["raw"] = raw
        maps["restored"] = volume_io.read_volume(restored).data
        with tempfile.TemporaryDirectory() as tmp:
            plots.orthoslices(maps, Path(tmp) / "o.png")
            plots.fourier_slices(maps, Path(tmp) / "f.png")
            run.images["orthoslices (drawn by report)"] = (Path(tmp) / "o.png").read_bytes()
            run.images["Fourier log-magnitude slices (drawn by report)"] = (Path(tmp) / "f.png").read_bytes()
    if not run.metrics and not run.images:
        raise InputError(f"{d} holds no metrics.json and no figures; is it a run directory?")
    return run


#: maps a run may score, in table order (raw first, then the classical baselines, then the method)
MAP_NAMES = ("raw", "gaussian", "wiener", "restored")
#: figures shown first in the side-by-side table (others follow alphabetically)
LEADING_FIGURES = ("psnr", "fsc05_apod", "fsc05", "wedge_corr", "ssim", "fsc_mid", "mid_amplitude", "snr_db")


def side_by_side(metrics: dict[str, object], maps: list[str] | None = None) -> tuple[list[str], list[tuple[str, list]]]:
    """Maps as columns, figures as rows: every numeric key ``<figure>_<map>`` present for at least two
    of ``maps`` (default :data:`MAP_NAMES`, those that occur). Returns (column names, [(figure, values
    with None where missing)]), :data:`LEADING_FIGURES` first."""
    cand = list(MAP_NAMES if maps is None else maps)
    stems: dict[str, dict[str, float]] = {}
    for k, v in metrics.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        for m in cand:
            if k.endswith(f"_{m}") and len(k) > len(m) + 1:
                stems.setdefault(k[: -len(m) - 1], {})[m] = float(v)
    stems = {s: d for s, d in stems.items() if len(d) >= 2}
    cols = [m for m in cand if any(m in d for d in stems.values())]
    order = [s for s in LEADING_FIGURES if s in stems] + sorted(s for s in stems if s not in LEADING_FIGURES)
    return cols, [(s, [stems[s].get(m) for m in cols]) for s in order]


#: metric keys of the truth-free score (:mod:`cryorestore.evaluate.truthfree`), shown in their own table
TRUTHFREE_PREFIX = "tf_"
_TF_LABELS = {
    "tf_gain_db": "estimated PSNR gain over raw (dB), no truth",
    "tf_gain_ci_low": "  95% interval, low",
    "tf_gain_ci_high": "  95% interval, high",
    "tf_true_gain_db": "true gain against the noise-free reconstruction (dB)",
    "tf_gain_potential_db": "PSNR gain against the potential (dB, affine fit)",
    "tf_hallucinated_power": "hallucinated power (fraction of raw power in no-signal shells)",
    "tf_flagged": "flagged (1: leak or hallucination; do not trust the estimate)",
}


def _truthfree_table(run: Run, cols: list[str], rows: list[tuple[str, list]]) -> str:
    """The truth-free table of one run (held-out region), with a line on how to read it."""
    order = [s for s in _TF_LABELS if any(s == r[0] for r in rows)] + sorted(s for s, _ in rows if s not in _TF_LABELS)
    vals = dict(rows)
    flagged = [c for c, v in zip(cols, vals.get("tf_flagged", [])) if v]
    out = [f"<h2>Truth-free score: {html.escape(run.name)}</h2><p>On the slab of the tomogram that training held out: "
           "the error of each map against the signal both half maps share, estimated from the other half "
           "(no truth needed; the true columns appear only on simulated data, to learn to read it). "
           "Gain &gt; 0: closer to the signal than the raw map. A map must beat the Gaussian and the Wiener "
           "filter to be worth its cost.</p>"]
    score = run.path / "score.json"
    try:
        assumption = json.loads(score.read_text()).get("assumption") if score.is_file() else None
    except (OSError, ValueError):
        assumption = None
    if isinstance(assumption, str):
        out.append(f"<p>Note: {html.escape(assumption)}.</p>")
    if flagged:
        out.append(f"<p><b>Flagged: {html.escape(', '.join(flagged))}</b> (the map of one half saw the other "
                   "half's noise, or invented structure the halves do not share; see score.json).</p>")
    out.append("<table><tr><th>figure</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
    for stem in order:
        label = _TF_LABELS.get(stem, stem)
        out.append(f"<tr><td>{html.escape(label)}</td>" + "".join(
            f"<td>{_fmt(v) if v is not None else '–'}</td>" for v in vals[stem]) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _fmt(v: object) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v))
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def build_html(runs: list[Run], title: str = "cryorestore report") -> str:
    """The report as one HTML string with inlined PNGs."""
    keys: list[str] = []
    for r in runs:
        keys.extend(k for k in r.metrics if k not in keys)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"
        "img{max-width:100%;border:1px solid #ddd;margin:4px 0}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Metrics</h2><table><tr><th>metric</th>" + "".join(f"<th>{html.escape(r.name)}</th>" for r in runs) + "</tr>",
    ]
    for k in keys:
        parts.append(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{_fmt(r.metrics.get(k, ''))}</td>" for r in runs) + "</tr>")
    parts.append("</table>")
    for r in runs:
        cols, rows = side_by_side(r.metrics)
        tf_rows = [(s, v) for s, v in rows if s.startswith(TRUTHFREE_PREFIX)]
        rows = [(s, v) for s, v in rows if not s.startswith(TRUTHFREE_PREFIX)]
        if len(cols) < 2:
            continue
        if tf_rows:
            parts.append(_truthfree_table(r, cols, tf_rows))
        if not rows:
            continue
        parts.append(f"<h2>Maps side by side: {html.escape(r.name)}</h2><p>raw, the classical baselines "
                     "(Gaussian low-pass, half-map Wiener filter) and the restored map, scored alike"
                     + (" (figures against the truth are those whose name says so)" if tf_rows else "") + "</p>"
                     "<table><tr><th>figure</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
        for stem, vals in rows:
            parts.append(f"<tr><td>{html.escape(stem)}</td>" + "".join(f"<td>{_fmt(v) if v is not None else '–'}</td>"
                                                                         for v in vals) + "</tr>")
        parts.append("</table>")
    for r in runs:
        parts.append(f"<h2>Run {html.escape(r.name)}</h2><p>{html.escape(str(r.path))}</p>")
        for caption, data in r.images.items():
            b64 = base64.b64encode(data).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{b64}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Collect ``run_dirs`` and write the HTML report to ``out`` atomically."""
    runs = [collect_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    for i, r in enumerate(runs):  # disambiguate equal folder names
        if names.count(r.name) > 1:
            r.name = str(r.path)
    return io.write_text(out, build_html(runs))
