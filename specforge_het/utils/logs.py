"""Logging for every entry point: messages go through `logging` (INFO to stdout, warnings and errors to stderr)
and are written with tqdm's writer, so progress bars stay on one line under them."""
from __future__ import annotations

import logging
import sys

ROOT = "specforge_het"


class _TqdmHandler(logging.Handler):
    """Writes each record with tqdm.write to the stream of the moment (so test capture and redirection see it)."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            tqdm.write(self.format(record), file=stream)
        except Exception:  # logging must never take the run down
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Idempotent: one handler on the package's root logger, plain messages — and on `__main__`'s, which is the
    logger of whichever entry module runs as `python -m specforge_het.<entry>`."""
    for name in (ROOT, "__main__"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
            handler = _TqdmHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    return logging.getLogger(ROOT)
