"""Outputs that are complete or absent: folder locks, staged commits, clean stops, disk errors.

A long command can be killed at any moment (SIGKILL from a scheduler's memory or time limit, a
pre-empted node), stopped (SIGTERM from Slurm or Nextflow, SIGINT from Ctrl-C), run out of disk, or
meet a second run writing the same folder. What this module guarantees, and how:

**Lock** (:func:`lock`). Every command that writes a model or output folder (or file) holds a lock
file ``.<name>.lock`` beside it: JSON with the holder's pid, host, process start time, command line
and start date, created with ``O_EXCL``. A second run into the same path raises
:class:`~cryorestore.errors.InputError` naming the holder (exit 2). A lock whose holder is gone (same
host, pid dead or reused by another process) is *stale*: it is taken over and a line says so. Locks
held from another host are never broken (their pid cannot be checked); remove the file by hand.

**Staged folders** (:func:`folder`). A command that owns an output folder ``D`` (``simulate``,
``reconstruct``, ``denoise``, the model directory of ``train``) writes into a sibling staging folder
``.<D>.staging-<pid>-<token>``; when it succeeds the staging folder *becomes* ``D`` in one step: a
rename when ``D`` does not exist, else an atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``) after
hard-linking into the staging folder the entries of ``D`` this commit does not replace (a model
directory's ``checkpoint.pt``, ``denoise``'s ``model/``); the old folder is then deleted. Readers see
the old folder or the new one, never a mixture. Where the file system has no exchange the fallback
is two renames (``D`` aside, staging into place): a kill between them leaves ``D`` absent, and the
next run into ``D`` puts the old one back before it starts.

**Staged files** (:func:`files`). A command that writes a few files into a folder it shares with
others (``predict``: the map and its provenance; ``evaluate``: ``metrics.json``, ``curves.json``,
``figures/``) writes them into ``<folder>/.cryorestore-staging-<pid>-<token>/`` and then renames them
into place one by one, after writing a journal (``.cryorestore-commit-<pid>-<token>.json``) that lists
them. A kill during the renames (microseconds) leaves the journal; the next run into the same output
(:func:`recover`, called under the lock) finishes the renames first (roll-forward), so the set is
complete or absent whenever no command is writing.

**Leftovers.** A killed writer leaves at most hidden debris: its staging folder and the temporary
``.<name>.*.part*`` files of :func:`cryorestore.io.atomic_path`. Whoever next takes the lock on that
output deletes them (under the lock no other writer can own them).

**Clean stop** (:func:`install_signal_handlers`). SIGTERM and SIGINT raise :class:`Stopped` in the
main thread (deferred while a commit is in its critical section), so staging folders are removed
and what was written before stays; the command line prints one line saying what was kept (the
callables registered with :func:`on_stop`, e.g. the last training checkpoint) and exits with
128 + the signal number (130 for SIGINT, 143 for SIGTERM).

**Disk errors** (:func:`os_error_line`). ENOSPC, EDQUOT, EROFS, EACCES and EPERM on a write become
one line naming the path, exit 2; the staged outputs are discarded, so nothing partial is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from cryorestore.errors import InputError

PathLike = str | os.PathLike
LOCK_SUFFIX = ".lock"
STAGING_MARK = ".staging-"
FILES_STAGING = ".cryorestore-staging-"
JOURNAL_PREFIX = ".cryorestore-commit-"

# ------------------------------------------------------------------------------------- processes


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot, Linux ``/proc``), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` on this host exists (and, given ``start``, is the same process, not a reuse)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is not None:
        now = _start_time(pid)
        if now is not None and now != start:
            return False
    return True


def _token() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _host_token() -> str:
    """``<host>-<pid>-<random>``: names a staging folder that may sit in a folder shared between hosts."""
    return f"{socket.gethostname()}-{_token()}"


def _dead_owner(name: str, prefix: str) -> bool:
    """Whether the staging entry ``name`` (``prefix<host>-<pid>-<random>[.json]``) belongs to a gone process here."""
    try:
        host, pid, _ = name[len(prefix):].rsplit("-", 2)
        return host == socket.gethostname() and not process_alive(int(pid))
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------- lock


def lock_path(path: PathLike) -> Path:
    """The lock file of output ``path`` (a folder or a file): ``.<name>.lock`` in the same folder."""
    p = Path(path).absolute()
    return p.parent / f".{p.name}{LOCK_SUFFIX}"


def read_holder(path: PathLike) -> dict | None:
    """The holder record of ``path``'s lock, None when unlocked (or the record is unreadable)."""
    try:
        return json.loads(lock_path(path).read_text())
    except (OSError, ValueError):
        return None


def _describe(h: dict) -> str:
    return (f"pid {h.get('pid')} on {h.get('host')} since {h.get('started')} "
            f"({h.get('command', '?')})")


def _stale(h: dict) -> bool:
    if h.get("host") != socket.gethostname():
        return False
    try:
        return not process_alive(int(h["pid"]), h.get("start_time"))
    except (KeyError, TypeError, ValueError):
        return True  # an unreadable record on this host: its writer died while writing it


def acquire(path: PathLike, command: str, *, quiet: bool = False) -> Path:
    """Take the lock of output ``path``; InputError naming the holder when another live run has it."""
    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": _start_time(os.getpid()),
          "command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(20):
        try:
            fd = os.open(lp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                text = lp.read_text()
                holder = json.loads(text)
            except FileNotFoundError:
                continue  # released meanwhile
            except (OSError, ValueError):
                # a record being written right now, or one a killed writer left empty
                age = time.time() - _mtime(lp)
                if age < 2.0:
                    time.sleep(0.05)
                    continue
                holder = {}
            if holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
                raise InputError(f"{path} is already in use by this process")
            if holder and not _stale(holder):
                raise InputError(f"{path} is in use by another run: {_describe(holder)}; wait for it to finish "
                                 f"or write elsewhere (lock file {lp})")
            # stale: move it aside (only one contender wins the rename), then try again
            aside = lp.with_name(lp.name + f".stale-{_token()}")
            try:
                os.rename(lp, aside)
            except FileNotFoundError:
                continue
            aside.unlink(missing_ok=True)
            if not quiet:
                print(f"note: took over the stale lock of {path} left by {_describe(holder) if holder else 'a killed run'}"
                      f" (that process is gone)", file=sys.stderr, flush=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(me) + "\n")
        return lp
    raise InputError(f"could not take the lock {lp}: it keeps changing; is another run starting there?")


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def release(path: PathLike) -> None:
    """Remove ``path``'s lock if this process holds it."""
    lp = lock_path(path)
    h = read_holder(path)
    if h is not None and h.get("pid") == os.getpid() and h.get("host") == socket.gethostname():
        lp.unlink(missing_ok=True)


@contextlib.contextmanager
def lock(paths: list[PathLike], command: str) -> Iterator[None]:
    """Hold the locks of every output in ``paths`` (see :func:`acquire`), and :func:`recover` each first.

    On leaving, every stage begun and not committed is discarded (the command failed, was stopped, or
    returned an error code), then the locks are released, and the folders this run created for them are
    removed again if they are empty (a failed run leaves no empty output folder behind).
    """
    taken: list[PathLike] = []
    created: list[Path] = []
    try:
        for p in paths:
            created.extend(_missing_folders(lock_path(p).parent))
            acquire(p, command)
            taken.append(p)
            recover(p)
        yield
    finally:
        discard_open()  # a stage not committed by the end of the command (a failure, a stop) is not an output
        for p in reversed(taken):
            release(p)
        for d in sorted(set(created), key=lambda f: len(f.parts), reverse=True):
            try:
                d.rmdir()  # only when empty: a folder that received outputs stays
            except OSError:
                pass


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet (absolute paths)."""
    out = []
    f = Path(folder).absolute()
    while not f.exists() and f != f.parent:
        out.append(f)
        f = f.parent
    return out


# ---------------------------------------------------------------------------------- clean stops


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGINT (a KeyboardInterrupt, so ``finally`` blocks run)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_critical = 0
_pending: int | None = None
_on_stop: list[Callable[[], str | None]] = []


def _handler(signum, frame) -> None:  # noqa: ANN001
    global _pending
    if _critical:
        _pending = signum
        return
    raise Stopped(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT raise :class:`Stopped` (main thread only; a no-op elsewhere)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _handler)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section that a SIGTERM/SIGINT does not interrupt; the stop is raised when it ends."""
    global _critical, _pending
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if _critical == 0 and _pending is not None:
            signum, _pending = _pending, None
            raise Stopped(signum)


def on_stop(describe: Callable[[], str | None]) -> None:
    """Register ``describe()``: called when the command is stopped, it returns what was kept (or None)."""
    _on_stop.append(describe)


def kept_line() -> str:
    """What the registered callables say was kept, or that nothing was written."""
    kept = []
    for fn in _on_stop:
        try:
            k = fn()
        except Exception:  # noqa: BLE001 — the stop message must not fail
            k = None
        if k:
            kept.append(k)
    if kept:
        return "kept " + "; ".join(kept)
    return "nothing was written (outputs appear only when complete)"


def reset() -> None:
    """Forget the :func:`on_stop` callables (a new command in the same process)."""
    _on_stop.clear()


def stop_exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal number: 143 for SIGTERM, 130 for SIGINT (and a plain KeyboardInterrupt)."""
    return 128 + (exc.signum if isinstance(exc, Stopped) else int(signal.SIGINT))


# -------------------------------------------------------------------------------------- disk errors

DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted"}


def os_error_line(exc: OSError) -> str | None:
    """One line for a disk error that leaves no partial output (None for other OS errors)."""
    why = DISK_ERRNOS.get(exc.errno or 0)
    if why is None:
        return None
    where = exc.filename or "an output"
    verb = "write" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "access"
    fix = "free space or write elsewhere" if verb == "write" else "check the permissions or write elsewhere"
    return f"cannot {verb} {where}: {why}; no partial output was kept, {fix}"


# ------------------------------------------------------------------------------------- exchange

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = None


def _renameat2(a: Path, b: Path) -> bool:
    """Atomically swap the names ``a`` and ``b``; False when the system cannot (then nothing changed)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.renameat2  # noqa: B018 — glibc >= 2.28
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    r = _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if r == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` gets ``src``'s files as hard links (folders recreated, symlinks copied as links)."""
    if src.is_symlink() or not src.is_dir():
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        return
    dst.mkdir()
    for child in src.iterdir():
        _link_tree(child, dst / child.name)


def _staging_prefix(dest: Path) -> str:
    return f".{dest.name}{STAGING_MARK}"


def _commit_folder(stage: Path, dest: Path) -> None:
    """Make ``stage`` the folder ``dest`` in one step, keeping entries of ``dest`` that ``stage`` lacks."""
    with critical():
        if not dest.exists():
            os.rename(stage, dest)
            return
        for entry in dest.iterdir():
            target = stage / entry.name
            if not os.path.lexists(target) and not entry.name.startswith(_staging_prefix(dest)):
                _link_tree(entry, target)
        if _renameat2(stage, dest):
            shutil.rmtree(stage, ignore_errors=True)  # now the old folder
            return
        old = dest.with_name(f".{dest.name}.old-{_token()}")
        os.rename(dest, old)
        os.rename(stage, dest)  # a kill before this line: recover() renames `old` back
        shutil.rmtree(old, ignore_errors=True)


_open: list["_Stage"] = []  # stages begun and neither committed nor discarded


class _Stage:
    """What both kinds of stage share: a staging folder ``.path`` that is discarded unless committed."""

    path: Path

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._close()

    def _close(self) -> None:
        if self in _open:
            _open.remove(self)


class Staged(_Stage):
    """The staging folder of output folder ``dest`` (see :func:`folder`): write into ``.path``, then
    :meth:`commit`. A stage left open when the command fails is discarded by :func:`lock`'s exit."""

    def __init__(self, dest: PathLike) -> None:
        d = Path(dest).absolute()
        if d.exists() and not d.is_dir():
            raise InputError(f"output folder {dest} exists and is not a folder")
        cwd = Path.cwd().resolve()
        if d.exists() and (cwd == d.resolve() or d.resolve() in cwd.parents):
            raise InputError(f"output folder {dest} holds the current folder; write into a subfolder of it")
        d.parent.mkdir(parents=True, exist_ok=True)
        self.dest = d
        self.path = d.parent / f"{_staging_prefix(d)}{_token()}"
        self.path.mkdir()
        _open.append(self)

    def commit(self) -> Path:
        """Make the staging folder ``dest`` in one step; returns ``dest``."""
        _commit_folder(self.path, self.dest)
        self._close()
        return self.dest



class StagedFiles(_Stage):
    """Staged files for the shared folder ``dest_folder`` (see :func:`files`): write into ``.path``
    under their final names, then :meth:`commit`."""

    def __init__(self, dest_folder: PathLike) -> None:
        self.given = Path(dest_folder)
        self.dest = self.given.absolute()
        self.dest.mkdir(parents=True, exist_ok=True)
        self.token = _host_token()
        self.path = self.dest / f"{FILES_STAGING}{self.token}"
        self.path.mkdir()
        _open.append(self)

    def final(self, p: PathLike) -> Path:
        """Where ``p`` (a path inside the stage) will be once committed (relative if the folder was given so)."""
        return relocate(p, self.path, self.given)

    def commit(self) -> Path:
        names = sorted(p.name for p in self.path.iterdir())
        journal = self.dest / f"{JOURNAL_PREFIX}{self.token}.json"
        with critical():
            tmp = journal.with_name(journal.name + ".part")
            tmp.write_text(json.dumps({"stage": self.path.name, "names": names}))
            os.replace(tmp, journal)
            _roll_forward(self.dest, self.path, names)
            journal.unlink()
        self._close()
        return self.dest



def discard_open() -> None:
    """Delete every stage begun and not committed (a command failed or was stopped)."""
    for st in list(_open):
        st.discard()


@contextlib.contextmanager
def _committed(st: "Staged | StagedFiles") -> Iterator[Path]:
    """Yield ``st``'s staging folder; commit it when the block ends normally, discard it on any exception."""
    try:
        yield st.path
        st.commit()
    except BaseException:
        st.discard()
        raise


@contextlib.contextmanager
def folder(dest: PathLike) -> Iterator[Path]:
    """Stage the output folder ``dest``: write into the yielded folder; on success it becomes ``dest``.

    On any exception (a stop, a disk error) the staging folder is deleted and ``dest`` is as before.
    ``dest`` must not be the current folder or hold it (it is replaced as a whole).
    """
    with _committed(Staged(dest)) as path:
        yield path


@contextlib.contextmanager
def files(dest_folder: PathLike) -> Iterator[Path]:
    """Stage files for the shared folder ``dest_folder``: write them into the yielded folder (same names);
    on success every entry moves into ``dest_folder`` under a journal (see the module docstring)."""
    with _committed(StagedFiles(dest_folder)) as path:
        yield path


def _roll_forward(d: Path, stage: Path, names: list[str]) -> None:
    for name in names:
        src, dst = stage / name, d / name
        if not os.path.lexists(src):
            continue  # moved before the kill
        if src.is_dir() and dst.is_dir() and not dst.is_symlink():
            if not _renameat2(src, dst):
                old = dst.with_name(f".{name}.old-{_token()}")
                os.rename(dst, old)
                os.rename(src, dst)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(src, dst)
    shutil.rmtree(stage, ignore_errors=True)


def recover(path: PathLike, _depth: int = 1) -> list[str]:
    """Clean up after killed writers of output ``path``; call with its lock held. Returns what was done.

    Finishes interrupted :func:`files` commits in its folder, puts back a folder left aside by the
    two-rename fallback of :func:`folder`, and deletes staging folders, ``atomic_path`` temporary
    files and data-parallel ``.shared-*.npy`` files that belong to ``path`` (inside it, when it is a
    folder, and in its subfolders one level down, e.g. ``denoise``'s ``model/``).
    """
    p = Path(path).absolute()
    parent = p.parent
    done: list[str] = []
    if not parent.is_dir():
        return done
    for j in sorted(parent.glob(f"{JOURNAL_PREFIX}*.json")):
        try:
            rec = json.loads(j.read_text())
        except (OSError, ValueError):
            continue
        if p.name not in rec.get("names", []):
            continue
        if not _dead_owner(j.name[:-len(".json")], JOURNAL_PREFIX):
            continue
        _roll_forward(parent, parent / rec["stage"], rec["names"])
        j.unlink(missing_ok=True)
        done.append(f"finished the interrupted commit {j.name}")
    olds = sorted(parent.glob(f".{p.name}.old-*"))
    if olds and not os.path.lexists(p):
        os.rename(olds[0], p)
        done.append(f"restored {p} from {olds[0].name}")
        olds = olds[1:]
    debris = olds + list(parent.glob(f"{_staging_prefix(p)}*")) + list(parent.glob(f".{p.name}.*.part*"))
    debris += [s for s in parent.glob(f"{FILES_STAGING}*") if _dead_owner(s.name, FILES_STAGING)]
    debris += [s for s in parent.glob(f"{JOURNAL_PREFIX}*.part") if _dead_owner(s.name[:-len(".json.part")], JOURNAL_PREFIX)]
    if p.is_dir():
        debris += list(p.glob(".*.part*")) + list(p.glob(f"{FILES_STAGING}*")) + list(p.glob(".shared-*.npy"))
    for f in debris:
        if f.is_dir() and not f.is_symlink():
            shutil.rmtree(f, ignore_errors=True)
        else:
            f.unlink(missing_ok=True)
    if debris:
        done.append(f"removed {len(debris)} leftover(s) of killed runs")
    if _depth > 0 and p.is_dir():  # folders inside an output (denoise's model/) are written under its lock
        for child in sorted(p.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                done += recover(child, _depth - 1)
    return done


def relocate(p: PathLike, stage: PathLike, dest: PathLike) -> Path:
    """The final path of ``p`` written inside ``stage`` once ``stage`` is committed as ``dest``."""
    return Path(dest) / Path(p).absolute().relative_to(Path(stage).absolute())
