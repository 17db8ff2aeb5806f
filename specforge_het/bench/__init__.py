"""Benchmarks: each module is an entry point that measures side by side in one run and prints ratios.

    python -m specforge_het.bench.data_gen --@demo
"""
