"""PyInstaller entry point: the `artannot` command (the GUI when given no arguments)."""

import multiprocessing
import sys

from artannot.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # the window trains in a 'spawn' child: in a bundle it re-enters here
    sys.exit(main())
