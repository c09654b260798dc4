"""``python -m trio_pool``: the command-line tool (see :mod:`trio_pool._cli`)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
