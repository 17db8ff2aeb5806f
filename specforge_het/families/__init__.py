"""The drafter families: one folder each, owning its whole slice.

A family folder holds its drafter model (`model.py`, registering its checkpoint architecture), its training loss and
catalog entry (`train.py`: an `algorithms.Algorithm` with its capabilities as data — modeling switches, packing,
sequence parallelism, its simulated-acceptance rule), its proposer when the generic tree proposer does not fit
(`proposer.py`), its converters per serving target (`export.py`), its typed options (`options.py`: the keys only it
reads, config/options.py) and its presets (`*.yaml`). Its `__init__.py` lists the modules that register it
(`REGISTERS`) and imports nothing, so that the schema can read a family's options without loading its model code.
Code shared by several families lives in a common folder (`block_common/`: the block-drafter backbone of DFlash and
DSpark, its shared options, and the "block" proposer).

Nothing outside a family's folder imports it: the registries (registry.py) call `load_all` by name on their first
lookup, which imports every folder's registering modules.
"""
from __future__ import annotations

import importlib
import pkgutil

FAMILIES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg))


def load_all() -> None:
    """Import every family's registering modules (its `REGISTERS`, relative to its folder)."""
    for name in FAMILIES:
        family = importlib.import_module(f"{__name__}.{name}")
        for module in getattr(family, "REGISTERS", ()):
            importlib.import_module(module, family.__name__)
