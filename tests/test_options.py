"""Typed options declared by the families and plugins that read them (config/options.py): in the schema like any
key (type, range, --help), read by some algorithm or plugin, and refused in one line where nothing reads them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specforge_het.algorithms import ALGORITHMS, check_options, get_algorithm, reads
from specforge_het.config import ConfigError, RunConfig, run_entry
from specforge_het.config.options import declared_options
from specforge_het.config.schema import set_key
from specforge_het.plugins import PLUGINS
from specforge_het.plugins.build import check_plugin_options
from specforge_het.train import run as train_run

FAMILY_OPTIONS = [o for o in declared_options() if o.section in ("modeling", "algorithm")]
PLUGIN_OPTIONS = [o for o in declared_options() if o.section == "plugins"]
RANGED = [o for o in declared_options() if o.range is not None]


def test_generic_sections_hold_no_family_key_and_every_declared_key_has_a_reader():
    assert FAMILY_OPTIONS and PLUGIN_OPTIONS
    read = set().union(*(reads(a) for _, a in ALGORITHMS.items()))
    for o in FAMILY_OPTIONS:
        assert f"{o.section}.{o.key}" in read, f"{o.owner} declares {o.section}.{o.key} but no algorithm reads it"
    assert {o.owner for o in PLUGIN_OPTIONS} <= set(PLUGINS.names())
    # and every key an algorithm says it reads is declared (a typo there would make the check pass silently)
    declared = {f"{o.section}.{o.key}" for o in declared_options()}
    for name, algorithm in ALGORITHMS.items():
        assert reads(algorithm) <= declared, name


def test_reading_the_schema_loads_no_model_code():
    code = ("import json, sys, specforge_het.config.schema; print(json.dumps(sorted(m for m in sys.modules "
            "if m == 'torch' or m.startswith('specforge_het.families.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert "torch" not in loaded
    assert loaded and all(m.endswith(".options") or m.count(".") == 2 for m in loaded), loaded


@pytest.mark.parametrize("option", declared_options(), ids=lambda o: f"{o.section}.{o.key}")
def test_declared_keys_read_like_schema_keys(option):
    cfg = RunConfig()
    assert getattr(getattr(cfg, option.section), option.key) == option.default
    with pytest.raises(ConfigError, match=rf"did you mean '{option.key}'"):
        set_key(cfg, f"{option.section}.{option.key}x", option.default, "test")


@settings(max_examples=60, deadline=None)
@given(option=st.sampled_from(RANGED), x=st.floats(-1e4, 1e4, allow_nan=False))
def test_declared_ranges_are_checked_at_load(option, x):
    value = round(x) if option.type in (int,) or "int" in str(option.type) else x
    cfg = RunConfig()
    if value in option.range:
        set_key(cfg, f"{option.section}.{option.key}", value, "test")
        assert getattr(getattr(cfg, option.section), option.key) == value
    else:
        with pytest.raises(ConfigError, match=f"{option.section}.{option.key}"):
            set_key(cfg, f"{option.section}.{option.key}", value, "test")


def test_a_key_the_algorithm_does_not_read_is_refused_naming_who_reads_it():
    cfg = RunConfig()
    cfg.algorithm.ttt_length = 3
    cfg.modeling.block_size = 4
    sections = {"modeling": cfg.modeling, "algorithm": cfg.algorithm}
    with pytest.raises(ConfigError, match=r"modeling.block_size, algorithm.ttt_length: not read by the eagle2 "
                                          r"algorithm .*--@dflash or --@dspark.*--@eagle3"):
        check_options(get_algorithm("eagle2"), sections)
    cfg.modeling.block_size = 8
    check_options(get_algorithm("eagle3"), sections)  # eagle3 reads ttt_length
    with pytest.raises(ConfigError, match="algorithm.ttt_length: not read by the dspark algorithm"):
        check_options(get_algorithm("dspark"), sections)


def test_train_refuses_an_unread_key_in_one_line_before_loading_anything(capsys):
    with pytest.raises(SystemExit) as e:
        run_entry("train", "s", train_run, ["--@eagle2", "--algorithm.ttt_length", "3",
                                            "--base.model_name_or_path", "/nonexistent/base"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "algorithm.ttt_length: not read by the eagle2 algorithm" in err[0], err


def test_a_plugin_key_without_its_plugin_is_refused():
    cfg = RunConfig()
    cfg.plugins.async_branches = 5
    with pytest.raises(ConfigError, match=r"plugins.async_branches: read only by the async_draft plugin, not enabled"):
        check_plugin_options(cfg.plugins, ["offload"])
    check_plugin_options(cfg.plugins, ["async_draft"])
