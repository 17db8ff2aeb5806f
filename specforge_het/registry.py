"""The one registry helper behind every registry of this package: drafter families' algorithms, architectures,
proposers, simulated-acceptance rules and export converters, and the exporters themselves.

A registry maps names to entries. Entries are registered by the modules that define them (a family's package, an
exporter's module); a lookup first imports the modules named by `loaders` — by name, the way entry points are found,
so that a low layer (the decode loop, checkpoint I/O) finds what a higher one (a drafter family) registered without
importing it. An unknown name is one line naming the closest valid ones.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, Optional, TypeVar

from .config.errors import ConfigError, closest

T = TypeVar("T")

# What every family-provided registry loads: families.load_all imports each family's registering modules.
FAMILIES = "specforge_het.families:load_all"


class Registry(Generic[T]):
    """name → entry. `what` names an entry in errors ("algorithm", "export format"); `loaders` are modules imported
    before the first lookup (their import registers the entries); "module:function" also calls that function."""

    def __init__(self, what: str, loaders: tuple[str, ...] = (FAMILIES,)):
        self.what = what
        self.loaders = loaders
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, entry: Optional[T] = None):
        """Register `entry` under `name` (→ entry), or use as a decorator: `@registry.register("name")`."""
        if entry is None:
            def deco(obj):
                self._add(name, obj)
                return obj
            return deco
        self._add(name, entry)
        return entry

    def _add(self, name: str, entry: T) -> None:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry

    def load(self) -> "Registry[T]":
        if not self._loaded:
            self._loaded = True  # first: a loader that looks something up while importing must not recurse
            for loader in self.loaders:
                module, _, function = loader.partition(":")
                imported = importlib.import_module(module)
                if function:
                    getattr(imported, function)()
        return self

    def get(self, name: str, where: str = "") -> T:
        """The entry `name`; otherwise a ConfigError `where: unknown <what> 'name'; did you mean ...`."""
        self.load()
        if name not in self._entries:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}unknown {self.what} {name!r}; {closest(name, self._entries)}")
        return self._entries[name]

    def find(self, name: str) -> Optional[T]:
        """The entry `name`, or None (for optional per-family rules)."""
        return self.load()._entries.get(name)

    def names(self) -> list[str]:
        """Every registered name, sorted (for --help and error messages)."""
        return sorted(self.load()._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self.load()._entries.items())

    def where(self, test: Callable[[T], bool]) -> list[str]:
        """Names of the entries that pass `test` (e.g. the algorithms that support packing)."""
        return sorted(n for n, e in self.items() if test(e))

    def __contains__(self, name: str) -> bool:
        return name in self.load()._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.load()._entries))

    def __len__(self) -> int:
        return len(self.load()._entries)
