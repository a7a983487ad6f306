"""``python -m pystate.bench``: the same as ``pystate bench``."""

import sys

from pystate.bench import main

sys.exit(main())
