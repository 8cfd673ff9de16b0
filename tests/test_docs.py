"""The documentation points only at things the repository has.

* Every relative path named in README.md and docs/*.md exists: markdown link targets (relative to
  the file that holds them) and repository paths written in code spans or code blocks (relative to
  the repository root; a token counts as a repository path when its first component is a tracked
  top-level file or folder, e.g. ``python/…``, ``tests/…``, ``containers/…``). A path that git
  ignores on purpose (a build output such as ``containers/cryorestore.sif``) may be named.
* No tracked file points at design notes or reference texts outside the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# written in pieces so that this file does not match itself
FORBIDDEN = ("DESIGN" + ".md", "shared" + "/reference", "../" + "shared")

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_PATHLIKE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")


def tracked_files() -> list[str]:
    """Repository-relative paths of the tracked files (the working tree minus .git when git is absent)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        files = [f for f in out.decode().split("\0") if f]
        if files:
            return files
    except (OSError, subprocess.CalledProcessError):
        pass
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]


def _ignored(rel: str) -> bool:
    try:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", rel], cwd=ROOT).returncode == 0
    except OSError:
        return False


def _clean(token: str) -> str:
    token = token.strip().strip("\"'()[]{}<>,;").rstrip(".:")
    return re.sub(r":\d+(-\d+)?$", "", token)  # file.py:123


def named_paths(text: str, top_level: set[str]) -> tuple[set[str], set[str]]:
    """(link targets, repository paths in code) named in markdown ``text``."""
    links = set()
    for target in _LINK.findall(text):
        target = target.split("#", 1)[0]
        if target and "://" not in target and not target.startswith(("mailto:", "/")):
            links.add(target)
    code = [m.group(0) for m in _FENCE.finditer(text)] + _CODE_SPAN.findall(_FENCE.sub("", text))
    repo_paths = set()
    for chunk in code:
        for raw in chunk.split():
            token = _clean(raw)
            if "=" in token:  # --opt=path, VAR=path
                token = token.split("=", 1)[1]
            if "/" not in token or "://" in token or not _PATHLIKE.match(token):
                continue
            if token.startswith("./"):
                token = token[2:]
            if token.split("/", 1)[0] in top_level:
                repo_paths.add(token.rstrip("/"))
    return links, repo_paths


def missing_paths(doc: Path, top_level: set[str]) -> list[str]:
    links, repo_paths = named_paths(doc.read_text(encoding="utf-8"), top_level)
    bad = []
    for target in sorted(links):
        path = (doc.parent / target).resolve()
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else None
        if rel is None:
            bad.append(f"{target} (link leaves the repository)")
        elif not path.exists() and not _ignored(str(rel)):
            bad.append(f"{target} (link)")
    for rel in sorted(repo_paths):
        if not (ROOT / rel).exists() and not _ignored(rel):
            bad.append(rel)
    return bad


def test_the_path_finder_sees_links_spans_and_blocks(tmp_path):
    text = ("See [the design](docs/architecture.md#layers) and [web](https://example.org/x.md), "
            "`python/cryorestore/io.py:12`, `cryorestore.io`, `data/TS_01.mrc`, `--out results/`.\n"
            "```bash\npython benchmarks/bench_native.py --out=tests/x.json\nls s3://bucket/python/a\n```\n")
    links, paths = named_paths(text, {"python", "benchmarks", "tests", "docs"})
    assert links == {"docs/architecture.md"}
    assert paths == {"python/cryorestore/io.py", "benchmarks/bench_native.py", "tests/x.json"}
    doc = ROOT / "README.md"
    assert missing_paths(doc, {"python"}) == []  # sanity: the README itself is clean for python/
    fake = tmp_path / "fake.md"
    fake.write_text("`python/cryorestore/no_such_module.py` and [gone](no_such_file.md)\n")
    links, paths = named_paths(fake.read_text(), {"python"})
    assert paths == {"python/cryorestore/no_such_module.py"} and links == {"no_such_file.md"}
    assert not (ROOT / "python/cryorestore/no_such_module.py").exists()


def test_docs_exist():
    assert (ROOT / "docs" / "architecture.md").is_file(), "docs/architecture.md is the project's design document"
    assert "docs/architecture.md" in (ROOT / "README.md").read_text(), "README.md must point at docs/architecture.md"


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_relative_path_named_in_the_docs_exists(doc):
    top_level = {f.split("/", 1)[0] for f in tracked_files()}
    bad = missing_paths(doc, top_level)
    assert not bad, f"{doc.relative_to(ROOT)} names paths the repository does not have:\n" + "\n".join(bad)


def test_no_tracked_file_points_outside_the_repository_for_its_design():
    hits = []
    for rel in tracked_files():
        path = ROOT / rel
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue  # binary
        text = data.decode("utf-8", errors="replace")
        for i, line in enumerate(text.splitlines(), 1):
            for needle in FORBIDDEN:
                if needle in line:
                    hits.append(f"{rel}:{i}: {line.strip()[:120]}")
    assert not hits, ("the repository must explain itself (docs/architecture.md); these point outside it:\n"
                      + "\n".join(hits))
