"""``python -m bench`` in a source checkout: the same as ``pystate bench``,
whose code is in the installed package (pystate/bench/)."""

from __future__ import annotations

import sys

from pystate.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m bench"))
