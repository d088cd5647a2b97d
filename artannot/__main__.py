"""`python -m artannot` runs the CLI (the GUI when given no arguments)."""

from artannot.cli import main

raise SystemExit(main())
