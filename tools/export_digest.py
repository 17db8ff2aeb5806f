"""Digest of every export (family × target) of tiny, seeded drafters: sha256 of each file written.

Run before and after a refactor and compare; identical digests mean the exports are byte-identical:

    python tools/export_digest.py --out before.json
    ...change the code...
    python tools/export_digest.py --compare before.json

Built on the test suite's tiny bases (tests/test_hetero.py) and drafter builders (tests/test_algorithms.py), so it
runs offline in seconds. Drafters come from the algorithm registry, exporters from the exporter registry: a family
added later is digested without editing this file."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

from specforge_het.config.errors import ConfigError  # noqa: E402
from test_algorithms import make  # noqa: E402
from test_hetero import tiny_base  # noqa: E402

# (base family, algorithm, modeling switches): one or more variants per drafter family.
VARIANTS = [
    ("llama", "eagle2", {}),
    ("llama", "eagle3", {"lm_head": "own"}),
    ("llama", "eagle3", {}),
    ("llama", "eagle3", {"lm_head": "own", "fc_norm": True, "norm_output": True}),
    ("llama", "eagle3", {"lm_head": "own", "embedding": "own", "draft_hidden_size": 16}),
    ("qwen3", "dflash", {"draft_family": "qwen3"}),
    ("qwen3", "dspark", {"draft_family": "qwen3"}),
    ("llama", "classic_draft", {}),
    ("llama", "peagle", {"draft_layers": 2}),
]


def export_files(drafter, target: str, out: Path) -> Path:
    """Call the target's exporter the way export/__main__.py does, with fixed serving settings."""
    from specforge_het.export import registry

    exporter = registry.get_exporter(target)
    exporter.check(drafter)
    settings = argparse.Namespace(num_steps=5, topk=8, num_draft_tokens=32)
    return Path(exporter.write(drafter, out, None, "BASE", settings))


def digest(out_dir: Path) -> dict:
    """sha256 per file; the export folder's own (temporary) path, which READMEs quote, reads as OUT."""
    def content(p: Path) -> bytes:
        data = p.read_bytes()
        return data.replace(str(out_dir).encode(), b"OUT") if p.suffix in (".md", ".json") else data

    return {str(p.relative_to(out_dir)): hashlib.sha256(content(p)).hexdigest()
            for p in sorted(out_dir.rglob("*")) if p.is_file()}


def digests() -> dict:
    from specforge_het.export import registry

    registry.get_exporter("specforge_het")  # loads every exporter
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for base_name, algorithm, modeling in VARIANTS:
            base = tiny_base(base_name)
            for target in sorted(registry.EXPORTERS):
                key = f"{algorithm}{json.dumps(modeling, sort_keys=True)} → {target}"
                torch.manual_seed(0)
                drafter = make(base, algorithm, **modeling)
                out = Path(tmp) / f"{len(result)}"
                try:
                    result[key] = digest(export_files(drafter, target, out))
                except ConfigError as e:
                    result[key] = f"refused: {e}"
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the digests here (JSON)")
    ap.add_argument("--compare", help="compare with digests written earlier; exit 1 on any difference")
    args = ap.parse_args()
    now = digests()
    if args.out:
        Path(args.out).write_text(json.dumps(now, indent=1, ensure_ascii=False) + "\n")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        diff = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        for k in diff:
            print(f"DIFFERS: {k}\n  before: {before.get(k)}\n  now:    {now.get(k)}")
        print(f"{len(now) - len(diff)} of {len(before.keys() | now.keys())} exports identical")
        return 1 if diff else 0
    print(json.dumps(now, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
