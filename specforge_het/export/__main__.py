from ..config.cli import run_entry
from . import __doc__ as _doc
from .stage import run

run_entry("export", _doc.strip().splitlines()[0], run)
