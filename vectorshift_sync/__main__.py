"""``python -m vectorshift_sync``: the command line (see :mod:`vectorshift_sync.cli`)."""

import sys

from .cli import main

__all__: "list[str]" = []

if __name__ == "__main__":
    sys.exit(main())
