"""``python -m dropsync.daemon.cli``: the same as the ``dropsync`` console script."""

from __future__ import annotations

import sys

from .shortcut import main

sys.exit(main())
