"""Small readers for the pipeline's Nextflow files, enough for tests that run without Nextflow.

Each module file holds one process; its sections are the lines ``input:``, ``output:``, ``script:``,
``stub:`` (and friends); the directives are the lines before the first section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "modules" / "local"
SECTIONS = ("input", "output", "when", "script", "shell", "exec", "stub")
_SECTION_RE = re.compile(rf"^\s*({'|'.join(SECTIONS)}):\s*$", re.M)
_VERSIONS_RE = re.compile(r"cat <<-?END_VERSIONS.*?END_VERSIONS", re.S)
_OPTION_RE = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


@dataclass
class Process:
    name: str
    path: Path
    directives: str
    sections: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return re.findall(r"^\s*label\s+['\"]([\w-]+)['\"]", self.directives, re.M)

    def command(self) -> tuple[list[str], list[str], int]:
        """(subcommand words, --options, number of cryorestore calls) of the script section.

        The versions.yml heredoc (``cryorestore --version``) is not counted.
        """
        text = _VERSIONS_RE.sub("", self.sections.get("script", ""))
        text = text.replace("\\\\\n", " ")
        calls = re.findall(r"\bcryorestore((?:\s+[a-z][a-z0-9_-]*)+)", text)
        words = calls[0].split() if calls else []
        return words, sorted(set(_OPTION_RE.findall(text))), len(calls)

    def output_paths(self) -> list[str]:
        """Literal file names declared with path('...') / path("...") in the output section."""
        return re.findall(r"path\(?\s*[\"']([^\"']+)[\"']", self.sections.get("output", ""))


def read_process(path: Path) -> list[Process]:
    text = path.read_text()
    found = list(re.finditer(r"^process\s+(\w+)\s*\{", text, re.M))
    procs = []
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        body = text[m.end():end]
        body = body[: body.rstrip().rfind("}")]
        marks = list(_SECTION_RE.finditer(body))
        directives = body[: marks[0].start()] if marks else body
        sections = {}
        for j, s in enumerate(marks):
            stop = marks[j + 1].start() if j + 1 < len(marks) else len(body)
            sections[s.group(1)] = body[s.end():stop]
        procs.append(Process(m.group(1), path, directives, sections))
    return procs


def all_processes() -> list[Process]:
    return [p for f in sorted(MODULES.glob("*.nf")) for p in read_process(f)]


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"(?m)(^|\s)//.*$", r"\1", text)


def config_params(path: Path) -> dict[str, str]:
    """name -> value text of the top-level ``params { ... }`` block and ``params.x = ...`` lines."""
    text = strip_comments(path.read_text())
    out: dict[str, str] = {}
    for block in re.finditer(r"(?m)^\s*params\s*\{(.*?)^\s*\}", text, re.S):
        for m in re.finditer(r"(?m)^\s*(\w+)\s*=\s*(.+?)\s*$", block.group(1)):
            out[m.group(1)] = m.group(2)
    for m in re.finditer(r"(?m)\bparams\.(\w+)\s*=(?!=)\s*(.+?)\s*$", text):  # an assignment, not ==
        out[m.group(1)] = m.group(2)
    return out


def literal(text: str):
    """The Python value of a config literal: null, true/false, a quoted string or a number."""
    text = text.strip()
    if text == "null":
        return None
    if text in ("true", "false"):
        return text == "true"
    if text[0] in "'\"":
        return text[1:-1]
    return float(text) if "." in text else int(text)


def params_used(text: str) -> set[str]:
    return set(re.findall(r"\bparams\.(\w+)", strip_comments(text)))


def profiles(path: Path) -> set[str]:
    """Profile names declared in the ``profiles { ... }`` block of a config file."""
    text = strip_comments(path.read_text())
    m = re.search(r"(?m)^profiles\s*\{", text)
    if not m:
        return set()
    depth, names, i = 1, set(), m.end()
    token = re.compile(r"(\w+)\s*\{|\{|\}")
    while depth and i < len(text):
        t = token.search(text, i)
        if t is None:
            break
        if t.group(0) == "}":
            depth -= 1
        else:
            if depth == 1 and t.group(1):
                names.add(t.group(1))
            depth += 1
        i = t.end()
    return names
