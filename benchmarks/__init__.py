"""Benchmarks: every ``bench_*.py`` module has ``main(out_dir) -> dict``.

Run them with ``python -m benchmarks.run`` (``make bench``).
"""
