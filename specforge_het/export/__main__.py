from . import __doc__ as _doc, run
from ..config import run_entry

run_entry("export", _doc.strip().splitlines()[0], run)
