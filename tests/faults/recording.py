"""``python recording.py ARGS``: ``cryorestore ARGS`` that also appends every model-directory save to a file.

Used by the fault harness for reference runs: with ``CRYORESTORE_FAULTS_RECORD=FILE`` each call of
:func:`cryorestore.modeldir.save_model_dir` appends one JSON line ``{file: sha256}`` of the four model
files, so a model directory left by a killed run can be matched against the saves of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys


def main() -> int:
    from cryorestore import modeldir
    from cryorestore.cli import main as cli_main

    record = os.environ.get("CRYORESTORE_FAULTS_RECORD")
    if record:
        original = modeldir.save_model_dir

        def recording(path, *args, **kwargs):  # noqa: ANN001, ANN202
            d = original(path, *args, **kwargs)
            shas = {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in modeldir.FILES}
            with open(record, "a") as fh:
                fh.write(json.dumps(shas) + "\n")
            return d

        modeldir.save_model_dir = recording
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
