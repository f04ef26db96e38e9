"""Pure sync core: email normalising, export parsing, applied state, planning, batching and masking.

Nothing in this package imports Airflow, an HTTP library or the hooks, so it can be read, tested and
benchmarked on its own.
"""

from __future__ import annotations
