"""``python -m pystate``: the command line (see :mod:`pystate.cli`)."""

import sys

from pystate.cli import main

if __name__ == "__main__":
    sys.exit(main())
