"""Benchmarks: each module is an entry point that measures side by side in one run and prints ratios.

    python -m specforge_het.bench.data_gen --@demo
"""


def comma_choices(text: str, allowed: tuple[str, ...], where: str) -> list[str]:
    """A comma-separated option value → its items, each one of `allowed`; else exit with one line naming `where`
    (e.g. "bench.ttt_memory: --impls") and the allowed values."""
    items = [x for x in text.split(",") if x]
    unknown = sorted(set(items) - set(allowed))
    if unknown:
        raise SystemExit(f"{where}: unknown {', '.join(unknown)}; expected some of {', '.join(allowed)}")
    return items
