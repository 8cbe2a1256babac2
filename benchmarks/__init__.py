"""Benchmarks of flask-loyalty against a bare DB-API floor.

Run them with ``python -m benchmarks`` (``--quick`` for small sizes). Each
workload runs the extension ("ours") and raw ``sqlite3``/``psycopg`` code doing
the same writes on the same tables ("the floor"), and prints one JSON object
per line with the ratio and whether it meets its target. See
``benchmarks/README.md`` and ``docs/performance.rst``.
"""
