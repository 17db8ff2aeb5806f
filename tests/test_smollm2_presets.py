"""The SmolLM2 recipes: every family recipe resolves with its base and family presets, writes under its own folder,
and every family that examples/smollm2_cpu/family.sh offers has one (its usage line once named a missing recipe)."""
import re
from pathlib import Path

import pytest

from specforge_het.config.cli import resolve_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem.removeprefix("smollm2_")
                 for p in (ROOT / "specforge_het/configs/smollm2").glob("smollm2_*.yaml"))


def offered_families() -> list[str]:
    usage = re.search(r"family\.sh ([a-z0-9|]+)", (ROOT / "examples/smollm2_cpu/family.sh").read_text()).group(1)
    return usage.split("|")


def test_family_script_offers_only_families_with_a_recipe():
    assert offered_families(), "family.sh's usage line lists no family"
    assert set(offered_families()) <= set(RECIPES), set(offered_families()) - set(RECIPES)


@pytest.mark.parametrize("family", RECIPES)
def test_recipe_resolves_with_its_family_into_its_own_folder(family):
    cfg = resolve_config(["--@smollm2", f"--@{family}", f"--@smollm2_{family}"])[0]
    assert cfg.algorithm.name == family
    for path in (cfg.training.output_dir, cfg.inference.drafter_path, cfg.export.checkpoint):
        assert Path(path).name == family, path
    assert cfg.data.dataset_dir == "output/smollm2/dataset_eagle3"  # run.sh's dump: no family needs its own
