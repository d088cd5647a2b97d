"""PyInstaller entry point: the `artannot` command (the GUI when given no arguments)."""

import sys

from artannot.cli import main

if __name__ == "__main__":
    sys.exit(main())
