"""The drafter architecture registry: the `architecture` field of drafter_config.json → the drafter class.

Each drafter family registers its classes (families/*/model.py) with `register_architecture`; checkpoint I/O
(checkpoint.py) looks them up by name and never imports a family."""
from __future__ import annotations

from ..registry import Registry

ARCHITECTURES: Registry[type] = Registry("drafter architecture")


def register_architecture(name: str):
    """Class decorator: `cls.ARCHITECTURE = name`, and checkpoints naming it load as `cls`."""
    def deco(cls):
        cls.ARCHITECTURE = name
        ARCHITECTURES.register(name, cls)
        return cls
    return deco
