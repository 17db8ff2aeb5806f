"""The product surface: the specforge-het console script, optional extras reported in one line, provenance beside
results, the transformers cache argument, and what exports read from the base's folder."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from specforge_het import __version__
from specforge_het.cli import STAGES, bench_names, help_text, resolve
from specforge_het.config.schema import ConfigError
from specforge_het.utils import extras
from specforge_het.utils.provenance import provenance, provenance_line


def test_console_script_lists_every_stage_and_benchmark():
    text = help_text()
    assert __version__ in text
    for name in [*STAGES, *(f"bench {b}" for b in bench_names())]:
        assert f"  {name} " in text
    assert {"serving", "iteration_cost", "variants"} <= set(bench_names())
    assert resolve(["train", "--@demo"]) == ("specforge_het.train", ["--@demo"])
    assert resolve(["bench", "serving", "--x.y", "1"]) == ("specforge_het.bench.serving", ["--x.y", "1"])


@pytest.mark.parametrize("argv, expected", [(["trian"], "did you mean 'train'"),
                                            (["bench", "servin"], "did you mean 'serving'"), (["bench"], "valid: ")])
def test_console_script_refuses_unknown_names_in_one_line(argv, expected):
    done = subprocess.run([sys.executable, "-m", "specforge_het.cli", *argv], capture_output=True, text=True)
    assert done.returncode == 2 and expected in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_subcommand_help_is_the_stage_help():
    done = subprocess.run([sys.executable, "-m", "specforge_het.cli", "synthesize", "--help"], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "--synth.num_prompts" in done.stdout and "--@smollm2" in done.stdout


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    monkeypatch.setattr(extras, "have", lambda module: False)
    monkeypatch.setattr(extras.importlib.util, "find_spec", lambda name: None)
    for module, extra in (("gguf", "gguf"), ("peft", "lora"), ("datasets", "data"), ("matplotlib", "plot")):
        with pytest.raises(ConfigError, match=rf"pip install 'specforge_het\[{extra}\]'"):
            extras.require(module)


def test_acceptance_png_is_skipped_without_matplotlib(tmp_path, monkeypatch):
    from specforge_het.inference import measure

    monkeypatch.setattr(measure, "have", lambda module: False)
    out = measure.write_acceptance_png([], tmp_path / "a.png", "t")
    assert out == tmp_path / "a.png" and not out.exists()


def test_provenance_names_command_commit_machine_and_cpu_class():
    p = provenance("inference.benchmark")
    assert p["command"].startswith("python -m specforge_het.inference.benchmark")
    assert p["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and p["cores"] >= 1
    line = provenance_line(p)
    for part in (p["command"], p["date"], f"CPU capability {p['cpu_capability']}", "commit"):
        assert part in line


def test_hot_path_passes_the_cache_under_the_installed_name(tiny_base):
    from transformers import DynamicCache

    from specforge_het.config.schema import BaseSection
    from specforge_het.modeling.base import load_base

    base = load_base(BaseSection(model_name_or_path=tiny_base))
    ids = torch.tensor([[1, 2, 3, 4]])
    cache = DynamicCache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import logging

        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("transformers").addHandler(handler)
        try:
            base.forward(ids[:, :3], past_key_values=cache)
            base.forward(ids[:, 3:], position_ids=torch.tensor([[3]]), past_key_values=cache)
        finally:
            logging.getLogger("transformers").removeHandler(handler)
    assert cache.get_seq_length() == 4
    assert not [r for r in records if "deprecated" in r.getMessage()]


def test_exports_read_the_base_folder(tiny_base):
    from specforge_het.export.base_parts import base_architectures

    assert base_architectures(tiny_base) == ["LlamaForCausalLM"] and base_architectures("org/hub-id") == []


def test_cli_reference_is_current():
    """docs/reference/cli.md is generated from the schema, presets and console script: regenerate it
    (python -m specforge_het.reference_docs) whenever one of them changes."""
    from specforge_het.reference_docs import OUT, render

    assert OUT.read_text() == render()


BENCH_WITH_OPTIONS = ["families", "forced_acceptance", "iteration_cost", "packing", "peer_train", "sequence_parallel",
                      "train_speed", "ttt_memory", "variants", "plugins"]


@pytest.mark.parametrize("name", BENCH_WITH_OPTIONS)
def test_every_benchmark_takes_the_shared_option_syntax(name, capsys):
    """Benchmarks read `--bench.KEY VALUE` like every stage reads --section.key: --help lists the keys, a misspelt key
    is one line naming the closest, exit 2."""
    import importlib

    from specforge_het.bench._options import parse_options

    options = importlib.import_module(f"specforge_het.bench.{name}").Options
    with pytest.raises(SystemExit) as done:
        parse_options(options, ["--help"], f"bench.{name}", "doc")
    assert done.value.code == 0 and "--bench." in capsys.readouterr().out
    key = next(f.name for f in dataclasses.fields(options) if not f.metadata.get("internal"))
    with pytest.raises(SystemExit) as done:
        parse_options(options, [f"--bench.{key}x", "1"], f"bench.{name}", "doc")
    assert done.value.code == 2


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 10_000), sizes=st.lists(st.integers(1, 64), min_size=1, max_size=4),
       impls=st.lists(st.sampled_from(["ours", "per_step", "naive"]), min_size=1, max_size=3))
def test_bench_options_round_trip_through_their_command_line(steps, sizes, impls):
    """What a benchmark hands its own subprocesses (to_argv) reads back as the same options — comma lists of one
    or several numbers included (fire reads `4` as a number and `1,4` as a tuple)."""
    from specforge_het.bench._options import read_options, to_argv
    from specforge_het.bench.ttt_memory import Options

    o = Options(lengths=",".join(map(str, sizes)), ttt=steps, impls=",".join(impls), one="512,ours")
    assert read_options(Options, to_argv(o), "bench.ttt_memory") == o
