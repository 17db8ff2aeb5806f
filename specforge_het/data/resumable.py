"""A JSONL output made in batches that survives a kill: rows are appended to `<out>.partial` (each batch flushed and
fsynced), the finished file appears only by rename, and a sidecar `<out>.meta.json` holds the fingerprint of every
input that made it. A rerun with the same inputs resumes after the last whole batch (or reuses the finished file);
a rerun with other inputs (another base, edited conversations, other settings) is refused in one line instead of
silently reusing stale rows.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..config.errors import ConfigError
from ..utils.io import atomic_write_json


class ResumableJsonl:
    def __init__(self, out: str | Path, fingerprint: dict, what: str):
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.meta = self.out.with_name(self.out.name + ".meta.json")
        self.fingerprint = json.loads(json.dumps(fingerprint))  # normalised (tuples → lists) for comparison
        self.what = what
        self._check()

    def _check(self) -> None:
        exists = self.out.exists() or self.partial.exists()
        if not exists:
            return
        if not self.meta.is_file():
            raise ConfigError(f"{self.what}: {self.out} exists but has no {self.meta.name} (made by an older "
                              "version or by hand); delete it or choose another output path")
        made = json.loads(self.meta.read_text()).get("fingerprint")
        if made != self.fingerprint:
            differ = sorted(k for k in set(made or {}) | set(self.fingerprint)
                            if (made or {}).get(k) != self.fingerprint.get(k))
            raise ConfigError(f"{self.what}: {self.out} was made from other inputs (differ: {', '.join(differ)}); "
                              "delete it (and its .partial / .meta.json) or choose another output path")

    @property
    def finished(self) -> bool:
        return self.out.is_file()

    def rows(self) -> list[dict]:
        """The rows written so far (finished file, else the whole lines of the partial one)."""
        src = self.out if self.out.is_file() else self.partial
        if not src.is_file():
            return []
        rows = []
        for line in src.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill mid-write: dropped, redone
                break
        return rows

    def start(self, keep: int) -> None:
        """Keep the first `keep` rows of the partial file (whole batches), rewriting it if it held a cut line."""
        if not self.meta.is_file():
            atomic_write_json(self.meta, {"fingerprint": self.fingerprint})
        rows = self.rows()[:keep]
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        with open(self.partial, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    def append(self, rows: list[dict]) -> None:
        with open(self.partial, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))  # one write per batch
            f.flush()
            os.fsync(f.fileno())

    def finish(self) -> Path:
        os.replace(self.partial, self.out)
        return self.out
