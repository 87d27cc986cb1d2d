"""``python -m edgeq.cli``: the same as the ``edgeq`` console script."""

from edgeq.cli import main

main()
