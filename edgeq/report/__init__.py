"""Reports rendered from a comparison's schema dict (what ``results.json`` holds).

``tables`` (cells, terminal and CSV tables), ``markdown``, ``html``, ``plots`` and ``files``
(the report folder). A report can be rebuilt from a ``results.json`` alone; this package sits
below :mod:`edgeq.comparison` and never imports it.
"""
