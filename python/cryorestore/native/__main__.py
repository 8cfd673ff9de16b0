"""``python -m cryorestore.native [--build] [--require-cuda]``: pre-build or inspect the extension."""

import sys

from cryorestore.native.build import main

sys.exit(main())
