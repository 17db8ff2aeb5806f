"""The drafter families: one folder each, owning its whole slice.

A family folder holds its drafter model (`model.py`, registering its checkpoint architecture), its training loss and
catalog entry (`train.py`: an `algorithms.Algorithm` with its capabilities as data — modeling switches, packing,
sequence parallelism, its simulated-acceptance rule), its proposer when the generic tree proposer does not fit
(`proposer.py`), its converters per serving target (`export.py`) and its presets (`*.yaml`). Its `__init__.py`
imports those modules: importing the folder registers the family. Code shared by several families lives in a
common folder (`block_common/`: the block-drafter backbone of DFlash and DSpark, and the "block" proposer).

Nothing outside a family's folder imports it: the registries (registry.py) load this package by name on their first
lookup, and this package imports every folder in it.
"""
from __future__ import annotations

import importlib
import pkgutil

FAMILIES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg))

for _name in FAMILIES:
    importlib.import_module(f"{__name__}.{_name}")
