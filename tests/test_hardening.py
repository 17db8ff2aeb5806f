"""Nothing silently wrong, one clear line for every bad input: conversations, datasets, drafter checkpoints, file
modes, dtypes — each case here was accepted silently or died with a traceback before."""
from __future__ import annotations

import gzip
import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_cfg
from specforge_het import data_gen, export
from specforge_het.config import ConfigError, run_entry
from specforge_het.config.schema import BaseSection
from specforge_het.data.conversations import read_conversations
from specforge_het.data.shards import MANIFEST, HiddenStateDataset
from specforge_het.modeling.base import load_base
from specforge_het.families.eagle.model import build_drafter
from specforge_het.modeling.drafter_base import CONFIG_NAME, WEIGHTS_NAME, load_drafter

GOOD = {"messages": [{"role": "user", "content": "def f():"}, {"role": "assistant", "content": "    return 1"}]}


def write_rows(path, rows, raw_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(raw_lines))
    return path


# ----- conversations -----
@pytest.mark.parametrize("row,field", [({"messages": None}, "messages"), ({"messages": "hello"}, "messages"),
                                       ({"messages": {"role": "user"}}, "messages"), ({"turns": 5}, "turns"),
                                       ({"conversations": "x"}, "conversations"),
                                       ({"messages": [{"role": "user", "content": 7}]}, "content")])
def test_malformed_rows_name_file_line_and_field(tmp_path, row, field):
    path = write_rows(tmp_path / "c.jsonl", [GOOD, row])
    with pytest.raises(ConfigError, match=rf"c\.jsonl:2: .*{field}"):
        read_conversations(path)


def test_dropped_rows_are_counted_and_gzip_is_read(tmp_path):
    rows = [GOOD, {"turns": []}, {"messages": []}, {"prompt": ""}, GOOD]
    plain = write_rows(tmp_path / "c.jsonl", rows)
    convs, report = read_conversations(plain)
    assert len(convs) == 2 and report.skipped["rows with no non-empty turn"] == 3
    packed = tmp_path / "c.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_conversations(packed)[0] == convs


def test_non_utf8_conversations_name_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.jsonl:2: not UTF-8"):
        read_conversations(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n", json.dumps({"prompt": "only a prompt, no answer"}) + "\n"])
def test_data_gen_refuses_input_with_nothing_to_train_on(tmp_path, tiny_base, content, capsys):
    convs = tmp_path / "empty.jsonl"
    convs.write_text(content)
    cfg = make_cfg(tmp_path, tiny_base, str(convs))
    with pytest.raises(ConfigError, match="empty.jsonl: no conversation with an assistant turn"):
        data_gen.run(cfg, [])
    assert not (tmp_path / "dataset" / MANIFEST).exists()


# ----- datasets -----
@pytest.fixture
def small_dataset(tmp_path, tiny_base, tiny_conversations):
    convs = tmp_path / "convs.jsonl"
    convs.write_text(open(tiny_conversations).read())
    cfg = make_cfg(tmp_path, tiny_base, str(convs), data__max_samples=20, data__shard_size=8)
    data_gen.run(cfg, [])
    return cfg


def test_conversations_edited_in_place_are_not_resumed_as_the_old_dataset(small_dataset):
    """The input is fingerprinted by content: the same command over an edited file is refused, naming what changed
    (before: 'resuming at shard 3 of 3' kept the old dataset; edited between a kill and the resume: a mix)."""
    path = small_dataset.data.conversations
    lines = open(path).read().splitlines()
    open(path, "w").write("\n".join(lines[1:] + lines[:1]) + "\n")
    with pytest.raises(ConfigError, match="changed: conversations_sha256"):
        data_gen.run(small_dataset, [])


def test_a_manifest_that_disagrees_with_its_shards_is_refused_at_open(small_dataset):
    d = small_dataset.data.dataset_dir
    mpath = os.path.join(d, MANIFEST)
    good = json.loads(open(mpath).read())
    assert len(HiddenStateDataset(d)) == 20
    for edit, message in [(lambda m: m["shards"][0].update(num_samples=5), "claims 5 samples"),
                          (lambda m: m["shards"].pop(1), "'num_samples' is 20, but its shards hold 12"),
                          (lambda m: m.update(num_samples=25), "'num_samples' is 25, but its shards hold 20")]:
        m = json.loads(json.dumps(good))
        edit(m)
        open(mpath, "w").write(json.dumps(m))
        with pytest.raises(ConfigError, match=message):
            HiddenStateDataset(d)
    open(mpath, "w").write(json.dumps(good))


def test_written_files_follow_the_umask(small_dataset, tmp_path):
    old = os.umask(0o022)
    try:
        cfg = make_cfg(tmp_path / "u", small_dataset.base.model_name_or_path, small_dataset.data.conversations,
                       data__max_samples=8)
        data_gen.run(cfg, [])
        base = load_base(BaseSection(model_name_or_path=cfg.base.model_name_or_path))
        build_drafter(base).save_pretrained(tmp_path / "u" / "drafter")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "u").rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files), \
        {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}


# ----- drafter checkpoints -----
@pytest.fixture
def saved_drafter(tmp_path, tiny_base):
    base = load_base(BaseSection(model_name_or_path=tiny_base))
    torch.manual_seed(0)
    return build_drafter(base).save_pretrained(tmp_path / "drafter")


def test_flipped_bytes_in_drafter_weights_are_detected(saved_drafter):
    path = saved_drafter / WEIGHTS_NAME
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x40  # inside the last tensor's data: the file still parses
    path.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="model.safetensors is corrupt: its sha256 differs"):
        load_drafter(saved_drafter)


def test_non_finite_weights_refused_at_load_and_export(saved_drafter, tmp_path):
    from specforge_het.utils.io import sha256_file

    path = saved_drafter / WEIGHTS_NAME
    state = load_file(str(path))
    state["fc.weight"][0, 0] = float("nan")
    save_file(state, str(path))
    cfg = json.loads((saved_drafter / CONFIG_NAME).read_text())
    cfg["weights_sha256"] = sha256_file(path)  # a run that diverged, not a corrupted file
    (saved_drafter / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"non-finite values \(NaN or inf\) in fc.weight"):
        load_drafter(saved_drafter)
    with pytest.raises(SystemExit) as exc:
        run_entry("export", "s", export.run, ["--export.checkpoint", str(saved_drafter),
                                              "--export.out", str(tmp_path / "out")])
    assert exc.value.code == 2


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_unreadable_drafter_weights_name_the_file(saved_drafter, damage):
    path = saved_drafter / WEIGHTS_NAME
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"\xff" * 8 + raw[8:])
    cfg = json.loads((saved_drafter / CONFIG_NAME).read_text())
    cfg.pop("weights_sha256")  # a checkpoint from before hashes: the reader itself must say what is wrong
    (saved_drafter / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"model.safetensors is not a readable safetensors file"):
        load_drafter(saved_drafter)


def test_export_keeps_the_checkpoint_dtype(tmp_path, tiny_base):
    base = load_base(BaseSection(model_name_or_path=tiny_base))
    out = build_drafter(base).save_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    run_entry("export", "s", export.run, ["--export.checkpoint", str(out), "--export.out", str(tmp_path / "ours")])
    assert {v.dtype for v in load_file(str(tmp_path / "ours" / WEIGHTS_NAME)).values()} == {torch.bfloat16}


def test_broken_tokenizer_is_one_line(tmp_path, tiny_base):
    import shutil

    broken = tmp_path / "base"
    shutil.copytree(tiny_base, broken)
    (broken / "tokenizer.json").write_text('{"version": "1.0", "truncated')
    with pytest.raises(ConfigError, match="its tokenizer cannot be loaded"):
        load_base(BaseSection(model_name_or_path=str(broken)))


def test_tied_classic_draft_saves_loads_and_keeps_fp32_master_weights(tmp_path, tiny_base):
    """A classic draft LM with tied embedding and head (Qwen2.5-0.5B-like) over a bf16 base: trained in fp32, saved
    once per tied tensor, loaded tied again with the same outputs."""
    from transformers import AutoConfig, LlamaForCausalLM

    from specforge_het.config.schema import ModelingSection
    from specforge_het.families.classic.model import build_classic_drafter

    cfg = AutoConfig.from_pretrained(tiny_base)
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.tie_word_embeddings = 32, 64, 1, True
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "small_lm")
    base = load_base(BaseSection(model_name_or_path=tiny_base, dtype="bfloat16"))
    drafter = build_classic_drafter(base, ModelingSection(draft_model_path=str(tmp_path / "small_lm")))
    assert {p.dtype for p in drafter.parameters()} == {torch.float32}
    assert drafter.lm.lm_head.weight is drafter.lm.get_input_embeddings().weight
    drafter.save_pretrained(tmp_path / "drafter")
    again = load_drafter(tmp_path / "drafter")
    assert again.lm.lm_head.weight.data_ptr() == again.lm.get_input_embeddings().weight.data_ptr()
    ids = torch.tensor([[3, 5, 7, 11]])
    assert torch.equal(again.token_logits(ids), drafter.token_logits(ids))


def test_presets_ship_with_a_non_editable_install(tmp_path):
    """`pip install .` (not -e) puts the presets in the package: --@demo --@eagle3 resolve from another folder."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(repo)], check=True, capture_output=True, timeout=600)
    code = ("import specforge_het, pathlib; from specforge_het.config import resolve_config; "
            "cfg, _ = resolve_config(['--@demo', '--@eagle3', '--@zero2']); "
            "print(cfg.algorithm.name, pathlib.Path(specforge_het.__file__).parent)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    name, where = out.stdout.split()
    assert name == "eagle3" and where.startswith(str(target))


def test_benchmark_reads_gzipped_humaneval_and_any_prompt_jsonl(tmp_path):
    from specforge_het.inference.benchmark import read_task

    rows = [{"task_id": "HumanEval/0", "prompt": "def add(a, b):\n"},
            {"task_id": "HumanEval/1", "prompt": "def f():\n"}]
    packed = tmp_path / "HumanEval.jsonl.gz"
    packed.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert read_task("humaneval", str(packed), 10).turns == [["def add(a, b):\n"], ["def f():\n"]]
    other = write_rows(tmp_path / "prompts.jsonl", [GOOD, {"question": "2 + 2?"}])
    assert read_task("humaneval", str(other), 10).turns == [["def f():"], ["2 + 2?"]]


def test_demo_precision_is_chosen_by_measurement():
    """demo.bf16_autocast defaults to auto: a probe times bf16 against fp32 on this CPU (AVX2-only CPUs run bf16
    ~20x slower; AVX512-BF16/AMX ones faster), and its verdict agrees with a longer independent measurement."""
    import time

    from specforge_het.config import RunConfig
    from specforge_het.demo_base import bf16_autocast_pays

    assert RunConfig().demo.bf16_autocast is None
    a, b = torch.randn(1024, 256), torch.randn(256, 704)

    def per_matmul(bf16: bool) -> float:  # the fastest of five rounds: contention only ever adds time
        best = float("inf")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            a @ b
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(6):
                    a @ b
                best = min(best, (time.perf_counter() - t0) / 6)
        return best

    ratio = per_matmul(True) / per_matmul(False)
    verdict = bf16_autocast_pays(256, 704)
    if ratio > 1.5 or ratio < 0.5:  # a clear case on this CPU: the probe must call it the same way
        assert verdict == (ratio < 0.5), f"bf16/fp32 time ratio {ratio:.2f}, probe said {verdict}"
