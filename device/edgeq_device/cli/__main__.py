"""``python -m edgeq_device.cli``: the ``edgeq-device`` command."""

from __future__ import annotations

import sys

from .commands import main

if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
