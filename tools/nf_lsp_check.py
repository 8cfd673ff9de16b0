#!/usr/bin/env python3
"""Lint Nextflow files with the Nextflow language server (the strict parser behind ``nextflow lint``).

The server is driven over stdio with the Language Server Protocol: ``initialize``, ``initialized``,
``workspace/didChangeConfiguration`` (the server analyses nothing before it has a configuration),
then ``textDocument/didOpen`` for every file; it answers with one ``textDocument/publishDiagnostics``
notification per analysed file. The plugin registry URL points at a closed loopback port so that the
server never reaches outside this machine.

Usage::

    python tools/nf_lsp_check.py [--jar tools/cache/language-server-all.jar] [--root .] [FILE ...]

Without FILE arguments every ``*.nf`` and ``*.config`` file under ROOT (except work/, results/, .git/
and tools/cache/) is checked. Prints one line per diagnostic as ``path:line:col: severity: message``
and exits 1 when any diagnostic has severity error, 0 otherwise (2 when the server could not run).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

DEFAULT_JAR = Path(__file__).resolve().parent / "cache" / "language-server-all.jar"
# A closed port on the loopback interface: plugin look-ups fail at once and nothing leaves the machine.
CLOSED_REGISTRY = "http://127.0.0.1:9/v1/"
EXCLUDE_DIRS = {"work", "results", ".git", ".nextflow", "cache", "node_modules", "__pycache__"}
SEVERITY = {1: "error", 2: "warning", 3: "information", 4: "hint"}


@dataclass(frozen=True)
class Diagnostic:
    """One diagnostic: file, 1-based line and column, severity name and message."""

    path: Path
    line: int
    column: int
    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.severity}: {self.message}"


class LanguageServer:
    """A minimal LSP client around ``java -jar language-server-all.jar`` (stdio transport)."""

    def __init__(self, jar: Path, java: str = "java") -> None:
        self.proc = subprocess.Popen(
            [java, "-Xshare:auto", "-jar", str(jar)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.messages: "queue.Queue[dict[str, Any]]" = queue.Queue()
        self.stderr_lines: list[str] = []
        self._next_id = 0
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True).start()

    # -- transport ---------------------------------------------------------------------------
    def _read_stdout(self, stream: BinaryIO) -> None:
        while True:
            headers: dict[str, str] = {}
            while True:
                line = stream.readline()
                if not line:
                    return
                text = line.decode("ascii", "replace").strip()
                if not text:
                    break
                key, _, value = text.partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = stream.read(length)
            if len(body) < length:
                return
            self.messages.put(json.loads(body.decode("utf-8")))

    def _read_stderr(self, stream: BinaryIO) -> None:
        for line in stream:
            self.stderr_lines.append(line.decode("utf-8", "replace").rstrip())

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode("utf-8")
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode("ascii") + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def request(self, method: str, params: Any, timeout: float) -> Any:
        self._next_id += 1
        rid = self._next_id
        self._send({"id": rid, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next_message(deadline - time.monotonic())
            if msg is None:
                raise TimeoutError(f"no answer to {method} within {timeout:.0f} s")
            if msg.get("id") == rid and "method" not in msg:
                if "error" in msg:
                    raise RuntimeError(f"{method} failed: {msg['error']}")
                return msg.get("result")
            self.handle(msg)

    def next_message(self, timeout: float) -> dict[str, Any] | None:
        """The next message from the server, answering its requests; None on timeout or exit."""
        if timeout <= 0:
            return None
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def handle(self, msg: dict[str, Any]) -> None:
        """Answer server-to-client requests (configuration, capability registration, progress)."""
        if "id" in msg and "method" in msg:
            result: Any = None
            if msg["method"] == "workspace/configuration":
                result = [None for _ in msg.get("params", {}).get("items", [])]
            self._send({"id": msg["id"], "result": result})

    def close(self) -> None:
        try:
            self.request("shutdown", None, timeout=10)
            self.notify("exit", None)
            self.proc.wait(timeout=10)
        except Exception:
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def default_files(root: Path) -> list[Path]:
    """Every ``*.nf`` and ``*.config`` file under ``root``, skipping run and cache folders."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDE_DIRS and not d.startswith(".nf"))
        for name in sorted(filenames):
            if name.endswith((".nf", ".config")):
                found.append(Path(dirpath) / name)
    return found


def check(files: list[Path], root: Path, jar: Path = DEFAULT_JAR, timeout: float = 120.0,
          settle: float = 2.0) -> list[Diagnostic]:
    """Open ``files`` in the language server rooted at ``root``; return every diagnostic it publishes.

    Waits until each file has had diagnostics published, then ``settle`` seconds of quiet (the server
    re-publishes when a file it depends on is analysed); raises TimeoutError past ``timeout`` seconds.
    """
    java = shutil.which("java")
    if java is None:
        raise FileNotFoundError("java is not on PATH (Java 17+ runs the Nextflow language server)")
    if not jar.is_file():
        raise FileNotFoundError(f"{jar} is missing: run tools/fetch_nf_lsp.sh")
    root = root.resolve()
    files = [f.resolve() for f in files]
    server = LanguageServer(jar, java)
    latest: dict[str, list[dict[str, Any]]] = {}
    try:
        server.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": root.as_uri(),
                "workspaceFolders": [{"uri": root.as_uri(), "name": root.name}],
                "capabilities": {
                    "textDocument": {"publishDiagnostics": {"relatedInformation": False}},
                    "workspace": {"configuration": False, "workspaceFolders": True},
                },
            },
            timeout=timeout,
        )
        server.notify("initialized", {})
        server.notify(
            "workspace/didChangeConfiguration",
            {
                "settings": {
                    "nextflow": {
                        "errorReportingMode": "warnings",
                        "pluginRegistryUrl": CLOSED_REGISTRY,
                        "files": {"exclude": sorted(EXCLUDE_DIRS)},
                        "typeChecking": False,
                    }
                }
            },
        )
        for f in files:
            language = "nextflow-config" if f.suffix == ".config" else "nextflow"
            server.notify(
                "textDocument/didOpen",
                {"textDocument": {"uri": f.as_uri(), "languageId": language, "version": 1, "text": f.read_text()}},
            )
        wanted = {f.as_uri() for f in files}
        deadline = time.monotonic() + timeout
        quiet_until = None
        while True:
            now = time.monotonic()
            if wanted <= latest.keys():
                quiet_until = quiet_until or now + settle
                if now >= quiet_until:
                    break
            if now >= deadline:
                missing = sorted(wanted - latest.keys())
                raise TimeoutError(f"no diagnostics within {timeout:.0f} s for: {', '.join(missing)}")
            if server.proc.poll() is not None:
                tail = "; ".join(server.stderr_lines[-5:])
                raise RuntimeError(f"language server exited with status {server.proc.returncode}: {tail}")
            wait = (quiet_until - now) if quiet_until else (deadline - now)
            msg = server.next_message(min(wait, 0.5))
            if msg is None:
                continue
            if msg.get("method") == "textDocument/publishDiagnostics":
                latest[msg["params"]["uri"]] = msg["params"].get("diagnostics", [])
                if quiet_until is not None:
                    quiet_until = time.monotonic() + settle
            else:
                server.handle(msg)
    finally:
        server.close()

    out: list[Diagnostic] = []
    for uri, diags in sorted(latest.items()):
        path = Path(uri.removeprefix("file://"))
        try:
            path = path.relative_to(root)
        except ValueError:
            pass
        for d in diags:
            start = d.get("range", {}).get("start", {})
            out.append(
                Diagnostic(
                    path=path,
                    line=int(start.get("line", 0)) + 1,
                    column=int(start.get("character", 0)) + 1,
                    severity=SEVERITY.get(int(d.get("severity", 1)), "error"),
                    message=" ".join(str(d.get("message", "")).split()),
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="files to check (default: every .nf and .config under --root)")
    ap.add_argument("--root", type=Path, default=Path.cwd(), help="workspace root (default: current folder)")
    ap.add_argument("--jar", type=Path, default=DEFAULT_JAR, help=f"language server jar (default: {DEFAULT_JAR})")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for diagnostics (default: 120)")
    args = ap.parse_args(argv)
    files = args.files or default_files(args.root)
    if not files:
        print(f"nf_lsp_check: no .nf or .config files under {args.root}", file=sys.stderr)
        return 2
    try:
        diags = check(files, args.root, args.jar, timeout=args.timeout)
    except (FileNotFoundError, TimeoutError, RuntimeError) as exc:
        print(f"nf_lsp_check: {exc}", file=sys.stderr)
        return 2
    for d in diags:
        print(d)
    errors = sum(d.severity == "error" for d in diags)
    print(f"nf_lsp_check: {len(files)} files, {errors} errors, {len(diags) - errors} other diagnostics")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
