"""`python -m cryorestore` runs the command-line interface."""

from cryorestore.cli import main

raise SystemExit(main())
