"""Fault-injection harness: start a cryorestore command, kill it at a seeded random moment, judge what is left.

For each command a *reference* run (uninterrupted, same options, same output path) is made first; it
fixes the run time ``T`` and the exact content of a complete output. A trial starts the command,
sends SIGKILL (or SIGTERM/SIGINT) after a delay drawn uniformly from ``[0, 1.05 T]`` with a seeded
generator, and classifies the output path:

* ``complete``: every output file is there and equal, byte for byte (MRC data for maps), to the
  reference's; for a model directory, its four files equal those of one of the reference run's saves
  (a model directory is updated at each better epoch, so a kill may leave an earlier best);
* ``absent``: none of the output files is there (hidden debris of the killed run, such as a staging
  folder or ``.part`` file, is counted apart: it is not an output, and the next run deletes it);
* ``earlier`` (``train`` only): the model directory is complete and equals an earlier save of the
  reference run (the best model so far, which ``train`` keeps up to date while it runs);
* ``corrupt``: anything else (a subset of the files, a file that differs, a mixture of two saves).

For ``train`` and ``denoise`` the trial then continues the run (``--resume`` when a checkpoint is
there, else from scratch) and checks that the final weights (and ``denoise``'s restored map) equal the
reference bit for bit ("resume matched"). The same harness drives the quick checks of ``make test``
(``tests/faults/test_faults_quick.py``) and the long benchmark (``make test-faults``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RECORDER = Path(__file__).with_name("recording.py")
MODEL_FILES = ("weights.pt", "config.json", "normalization.json", "version.txt")
TINY_TRAIN = ["--method", "n2n", "--model-option", "base_channels=4", "--model-option", "depth=2",
              "--model-option", "convs_per_block=1", "--subtomo-size", "16", "--n-subtomos", "24", "--epochs", "3",
              "--batch-size", "4", "--lr", "2e-3", "--device", "cpu", "--seed", "5", "--no-progress"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "python") + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")
    e.setdefault("MKL_NUM_THREADS", "1")
    return e


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def mrc_data(p: Path) -> bytes:
    import mrcfile

    with mrcfile.open(p, permissive=False) as m:
        return np.asarray(m.data).tobytes() + repr(float(m.voxel_size.x)).encode()


def star_data(p: Path) -> str:
    """A STAR file's tables (its first line carries the time it was written, which is not content)."""
    return "\n".join(line for line in p.read_text().splitlines() if not line.startswith("# Created by"))


def hidden_debris(folder: Path) -> list[str]:
    """Hidden leftovers of a killed writer in ``folder`` (staging folders, ``.part`` files, stale locks)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@dataclass
class Command:
    """One command under test: its arguments (with ``{out}`` for the output path), how to compare outputs."""

    name: str
    argv: list[str]
    out: Path  # the output folder or file
    files: list[str]  # output entries (relative to ``base``) that make a complete output
    base: Path  # folder the entries are relative to
    compare: dict[str, Callable[[Path], object]] = field(default_factory=dict)  # per entry: content fingerprint
    model_dir: Path | None = None  # train/denoise: the model directory
    resumable: bool = False
    seconds: float = 0.0
    reference: dict[str, object] = field(default_factory=dict)
    model_saves: list[dict[str, str]] = field(default_factory=list)  # per save of the reference: file -> sha
    final_model: dict[str, str] = field(default_factory=dict)


def run(argv: list[str], record: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    e = env()
    if record is not None:
        e["CRYORESTORE_FAULTS_RECORD"] = str(record)
    return subprocess.run([sys.executable, str(RECORDER), *argv], capture_output=True, text=True, env=e,
                          timeout=timeout)


def fingerprint(c: Command) -> dict[str, object]:
    out = {}
    for name in c.files:
        p = c.base / name
        fn = c.compare.get(name, lambda q: sha(q) if q.is_file() else sorted(x.name for x in q.iterdir()))
        out[name] = fn(p)
    return out


def model_state(d: Path) -> dict[str, str] | None:
    if not all((d / f).is_file() for f in MODEL_FILES):
        return None
    return {f: sha(d / f) for f in MODEL_FILES}


def make_reference(c: Command) -> None:
    """Run ``c`` uninterrupted; record its time, its outputs' fingerprints and (train) every model save."""
    clear(c)
    rec = c.out.parent / f"{c.name}-saves.jsonl"
    rec.unlink(missing_ok=True)
    t0 = time.perf_counter()
    r = run(c.argv, record=rec)
    c.seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"reference run of {c.name} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    c.reference = fingerprint(c)
    if c.model_dir is not None:
        c.model_saves = [json.loads(line) for line in rec.read_text().splitlines()] if rec.exists() else []
        c.final_model = model_state(c.model_dir) or {}
    rec.unlink(missing_ok=True)


def clear(c: Command) -> None:
    """Remove the command's outputs (and its locks and leftovers) before a trial."""
    for name in c.files:
        p = c.base / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    if c.out.is_dir():
        shutil.rmtree(c.out)
    elif c.out.exists():
        c.out.unlink()
    for p in c.out.parent.glob(f".{c.out.name}*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    for p in c.base.glob(".cryorestore-*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def classify(c: Command) -> tuple[str, str]:
    """(``complete``/``absent``/``corrupt``, why) for the outputs of ``c`` as they are now."""
    present = [n for n in c.files if os.path.lexists(c.base / n)]
    why = ""
    if c.model_dir is not None and c.model_dir.exists():
        got = {f: sha(c.model_dir / f) for f in MODEL_FILES if (c.model_dir / f).is_file()}
        if got and got not in c.model_saves:
            return "corrupt", f"model directory matches none of the reference's saves ({sorted(got)})"
        if c.model_dir == c.out and got and got != c.final_model:
            # train keeps the best model so far: a complete model directory of an earlier epoch
            return "earlier", f"the complete model of the reference's save {c.model_saves.index(got) + 1} " \
                              f"of {len(c.model_saves)}"
    if not present:
        return "absent", why
    if len(present) < len(c.files):
        return "corrupt", f"only {present} of {c.files}"
    try:
        fp = fingerprint(c)
    except Exception as exc:  # noqa: BLE001 — an unreadable output is a corrupt one
        return "corrupt", f"unreadable: {exc}"
    diff = [n for n in c.files if fp[n] != c.reference[n]]
    if diff:
        return "corrupt", f"differ from the reference: {diff}"
    return "complete", why


@dataclass
class Trial:
    command: str
    signal: str
    delay: float
    rc: int | None
    state: str
    why: str
    debris: int
    resumed: bool | None = None  # None: not a resumable command
    resume_rc: int | None = None
    stderr_tail: str = ""


def kill_after(argv: list[str], delay: float, sig: int) -> tuple[int, str]:
    """Start ``cryorestore argv``, send ``sig`` after ``delay`` s (if still running); (exit code, stderr)."""
    p = subprocess.Popen([sys.executable, "-m", "cryorestore", *argv], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=env())
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(sig)
    _, err = p.communicate(timeout=600)
    return p.returncode, err


def trial(c: Command, rng: np.random.Generator, sig: int = signal.SIGKILL, resume: bool = True,
          earliest: float = 0.0) -> Trial:
    """Kill ``c`` once at a moment drawn uniformly from ``[earliest, 1.05 T]`` and judge what is left."""
    clear(c)
    delay = float(rng.uniform(earliest, 1.05 * c.seconds))
    rc, err = kill_after(c.argv, delay, sig)
    state, why = classify(c)
    debris = len(hidden_debris(c.out.parent)) + len(hidden_debris(c.out)) + len(hidden_debris(c.base))
    t = Trial(c.name, signal.Signals(sig).name, round(delay, 3), rc, state, why, debris,
              stderr_tail=err.strip().splitlines()[-1] if err.strip() else "")
    if c.resumable and resume:
        has_ckpt = c.model_dir is not None and any((c.model_dir / f).is_file()
                                                   for f in ("checkpoint.pt", "checkpoint.prev.pt"))
        argv = c.argv + (["--resume"] if has_ckpt else [])
        r = run(argv)
        t.resume_rc = r.returncode
        t.resumed = (r.returncode == 0 and model_state(c.model_dir) == c.final_model
                     and classify(c)[0] == "complete")
        if not t.resumed:
            t.why += f" | resume rc {r.returncode}: {r.stderr.strip().splitlines()[-1:] if r.stderr else ''}"
    return t


def setup(work: Path, names: tuple[str, ...] = ("simulate", "reconstruct", "train", "predict", "evaluate", "denoise")
          ) -> dict[str, Command]:
    """Inputs for every command in ``work`` and their reference runs (a few seconds each on one core)."""
    work.mkdir(parents=True, exist_ok=True)
    sim = work / "inputs"
    if not (sim / "even.mrc").exists():
        r = run(["simulate", str(sim), "--preset", "toy", "--shape", "32", "48", "48", "--seed", "1", "--device", "cpu"])
        assert r.returncode == 0, r.stderr
    cmds: dict[str, Command] = {}
    from cryorestore.simulate import OUTPUT_FILES, _SUFFIX  # the simulator's file set

    sim_files = [f"{n}{_SUFFIX.get(n, '.mrc')}" for n in OUTPUT_FILES] + ["template_blob.mrc"]
    mrc_cmp = {f: mrc_data for f in sim_files if f.endswith(".mrc")} | {"particles.star": star_data}
    o = work / "sim_out"
    cmds["simulate"] = Command("simulate", ["simulate", str(o), "--preset", "toy", "--shape", "32", "48", "48",
                                            "--seed", "2", "--device", "cpu"], o, sim_files, o, mrc_cmp)
    o = work / "recon_out"
    cmds["reconstruct"] = Command("reconstruct", ["reconstruct", str(sim / "tilt_series.mrc"), "--angles",
                                                  str(sim / "tilts.tlt"), "--out-dir", str(o), "--device", "cpu"],
                                  o, ["full.mrc", "even.mrc", "odd.mrc"], o,
                                  {f: mrc_data for f in ("full.mrc", "even.mrc", "odd.mrc")})
    o = work / "model"
    cmds["train"] = Command("train", ["train", "--even", str(sim / "even.mrc"), "--odd", str(sim / "odd.mrc"),
                                      *TINY_TRAIN, "--out", str(o)], o, list(MODEL_FILES), o,
                            model_dir=o, resumable=True)
    pred_dir = work / "pred"
    pred_dir.mkdir(exist_ok=True)
    o = pred_dir / "restored.mrc"
    cmds["predict"] = Command("predict", ["predict", str(work / "model"), "--even", str(sim / "even.mrc"), "--out",
                                          str(o), "--device", "cpu", "--no-progress"], o,
                              ["restored.mrc", "restored.provenance.json"], pred_dir,
                              {"restored.mrc": mrc_data, "restored.provenance.json": lambda p: sorted(json.loads(p.read_text()))})
    ev = work / "eval"
    ev.mkdir(exist_ok=True)
    o = ev / "metrics.json"
    cmds["evaluate"] = Command("evaluate", ["evaluate", "--raw", str(sim / "full.mrc"), "--restored",
                                            str(work / "pred" / "restored.mrc"), "--truth",
                                            str(sim / "ground_truth.mrc"), "--tilt-range", "-60", "60",
                                            "--out", str(o), "--device", "cpu"], o,
                               ["metrics.json", "curves.json", "figures"], ev,
                               {"metrics.json": lambda p: json.loads(p.read_text())["metrics"],
                                "curves.json": sha, "figures": lambda p: sorted(x.name for x in p.iterdir())})
    o = work / "den"
    cmds["denoise"] = Command("denoise", ["denoise", "--even", str(sim / "even.mrc"), "--odd", str(sim / "odd.mrc"),
                                          *TINY_TRAIN, "--out-dir", str(o), "--truth", str(sim / "ground_truth.mrc")],
                              o, ["restored.mrc", "restored.provenance.json", "metrics.json"], o,
                              {"restored.mrc": mrc_data, "restored.provenance.json": lambda p: sorted(json.loads(p.read_text())),
                               "metrics.json": lambda p: sorted(json.loads(p.read_text())["metrics"])},
                              model_dir=o / "model", resumable=True)
    order = ("simulate", "reconstruct", "train", "predict", "evaluate", "denoise")
    needs = {"predict": ("train",), "evaluate": ("train", "predict")}
    wanted = set(names) | {d for n in names for d in needs.get(n, ())}
    for n in order:
        if n in wanted:
            make_reference(cmds[n])
    return {n: cmds[n] for n in order if n in names}


def concurrent_train(c: Command) -> dict[str, object]:
    """Two ``train`` runs started together into one model directory: who won, what the loser said, and
    whether the directory is the uninterrupted reference's (nothing mixed)."""
    clear(c)
    procs = [subprocess.Popen([sys.executable, "-m", "cryorestore", *c.argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env()) for _ in range(2)]
    res = [(p.wait(timeout=900), p.stderr.read()) for p in procs]
    codes = [rc for rc, _ in res]
    loser = [err.strip().splitlines() for rc, err in res if rc == 2]
    winner_pid = [p.pid for p, (rc, _) in zip(procs, res) if rc == 0]
    line = loser[0][-1] if loser and loser[0] else ""
    return {"exit_codes": codes, "loser_stderr_lines": len(loser[0]) if loser else 0, "loser_line": line,
            "loser_line_names_holder": bool(winner_pid) and f"pid {winner_pid[0]}" in line,
            "model_matches_reference": model_state(c.model_dir) == c.final_model and classify(c)[0] == "complete"}


def summarise(trials: list[Trial]) -> dict[str, object]:
    by: dict[str, dict[str, int]] = {}
    for t in trials:
        d = by.setdefault(t.command, {"kills": 0, "complete": 0, "earlier": 0, "absent": 0, "corrupt": 0, "debris_left": 0,
                                      "resumes": 0, "resumes_matched": 0})
        d["kills"] += 1
        d[t.state] += 1
        d["debris_left"] += int(t.debris > 0)
        if t.resumed is not None:
            d["resumes"] += 1
            d["resumes_matched"] += int(t.resumed)
    keys = ("kills", "complete", "earlier", "absent", "corrupt", "debris_left", "resumes", "resumes_matched")
    total = {k: sum(d[k] for d in by.values()) for k in keys}
    return {"per_command": by, "total": total}
