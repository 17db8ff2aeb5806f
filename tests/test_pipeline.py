"""The thin pipeline on a tiny random base: data_gen → train → inference → export."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from specforge_het import data_gen, export, train
from specforge_het.algorithms import get_loss
from specforge_het.config import ConfigError
from specforge_het.data.conversations import read_conversations, tokenize_conversation
from specforge_het.data.shards import HiddenStateDataset, collate, shard_name
from specforge_het.inference import __main__ as inference
from specforge_het.modeling.base import load_base
from specforge_het.families.eagle.model import EagleDrafter

from conftest import make_cfg


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def dataset(workdir, tiny_base, tiny_conversations):
    cfg = make_cfg(workdir, tiny_base, tiny_conversations)
    data_gen.run(cfg, [])
    return cfg


@pytest.fixture(scope="module")
def trained(dataset):
    cfg = dataset
    cfg.training.max_steps = 60
    cfg.training.learning_rate = 3e-3
    cfg.training.per_device_train_batch_size = 8
    cfg.training.logging_steps = 20
    cfg.training.save_steps = 1000
    train.run(cfg, [])
    return cfg


def test_assistant_mask_covers_exactly_the_answer(tiny_base, tiny_conversations):
    base = load_base(make_cfg(Path("."), tiny_base).base)
    tok = base.tokenizer
    convs, report = read_conversations(tiny_conversations)
    assert report.read == len(convs) > 5
    msgs = convs[0]
    ids, mask = tokenize_conversation(tok, msgs, max_length=10_000)
    answer = tok.decode([t for t, m in zip(ids, mask) if m])
    assert answer == msgs[1]["content"] + tok.eos_token
    assert tok.decode([t for t, m in zip(ids, mask) if not m]) == msgs[0]["content"]


def test_data_gen_writes_manifest_and_shards(dataset):
    ds = HiddenStateDataset(dataset.data.dataset_dir)
    m = ds.manifest
    assert m["complete"] and m["num_samples"] == len(ds) and len(m["shards"]) == -(-len(ds) // 16)
    s = ds[3]
    assert s["hidden"].shape == (len(s["input_ids"]), 64) and s["hidden"].dtype == torch.bfloat16
    assert s["loss_mask"].sum() > 0
    saved = json.loads((Path(dataset.data.dataset_dir) / "resolved_config.json").read_text())
    assert saved["entry"] == "data_gen" and saved["config"]["data"]["shard_size"] == 16


def test_hidden_states_match_a_fresh_base_forward(dataset):
    base = load_base(dataset.base)
    s = HiddenStateDataset(dataset.data.dataset_dir)[5]
    h, _ = base.forward(s["input_ids"][None])
    torch.testing.assert_close(s["hidden"].float(), h[0].to(torch.bfloat16).float())


def test_data_gen_resumes_after_a_crash(dataset, tmp_path, monkeypatch):
    """A run that dies after 2 shards, rerun with the same command, equals an uninterrupted run byte for byte."""
    from specforge_het.data import shards

    real_write, calls = shards.ShardWriter.write, {"n": 0}

    def dying_write(self, samples):
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        calls["n"] += 1
        real_write(self, samples)

    cfg = make_cfg(tmp_path, dataset.base.model_name_or_path, dataset.data.conversations)
    monkeypatch.setattr(shards.ShardWriter, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        data_gen.run(cfg, [])
    partial = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
    assert len(partial["shards"]) == 2 and not partial["complete"]
    with pytest.raises(ConfigError, match="incomplete"):
        HiddenStateDataset(tmp_path / "dataset")
    monkeypatch.setattr(shards.ShardWriter, "write", real_write)
    data_gen.run(cfg, [])
    src = Path(dataset.data.dataset_dir)
    again = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
    want = json.loads((src / "manifest.json").read_text())
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in want["shards"]]
    assert again["num_samples"] == want["num_samples"]


def test_corrupt_shard_is_named(dataset, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(dataset.data.dataset_dir, dst)
    path = dst / shard_name(1)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ConfigError, match="shard_00001.*corrupt"):  # found when the dataset is opened
        HiddenStateDataset(dst)[16]


def test_one_training_step_moves_drafter_not_base(dataset, tmp_path):
    cfg = make_cfg(tmp_path, dataset.base.model_name_or_path, dataset.data.conversations)
    cfg.data.dataset_dir = dataset.data.dataset_dir
    base = load_base(cfg.base)
    base_before = {k: v.clone() for k, v in base.model.state_dict().items()}
    drafter = train.make_drafter(cfg, base)
    before = {k: v.clone() for k, v in drafter.state_dict().items()}
    cfg.training.max_steps = 1
    cfg.training.warmup_steps = 0  # with warmup, step 1 runs at lr 0
    trainer = train.DrafterTrainer(model=drafter, args=train.training_arguments(cfg, use_cpu=True),
                                   train_dataset=HiddenStateDataset(cfg.data.dataset_dir),
                                   data_collator=collate, loss_fn=get_loss("eagle2"),
                                   algorithm_cfg=cfg.algorithm)
    trainer.train()
    opt_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in base.model.parameters()}
    changed = [k for k, v in drafter.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("fc.") for k in changed) and any(k.startswith("layers.0.") for k in changed)
    for k, v in base.model.state_dict().items():
        assert torch.equal(v, base_before[k]), f"base weight {k} changed"


def test_training_reduces_loss_and_saves_our_format(trained):
    out = Path(trained.training.output_dir)
    log = [h for h in json.loads((out / "train_log.json").read_text()) if "loss" in h]
    assert log[-1]["loss"] < log[0]["loss"]
    assert (out / "model.safetensors").is_file() and (out / "drafter_config.json").is_file()
    assert not list(out.glob("*.bin")) and json.loads((out / "resolved_config.json").read_text())["entry"] == "train"
    keys = load_file(str(out / "model.safetensors")).keys()
    assert not any("embed" in k or "lm_head" in k for k in keys)


@pytest.mark.parametrize("strategy", ["chain", "tree", "budget"])
def test_speculative_greedy_is_lossless(trained, strategy):
    cfg = trained
    cfg.inference.strategy = strategy
    cfg.inference.prompts = cfg.data.conversations
    cfg.inference.num_prompts = 6
    cfg.inference.prompt_offset = 30
    cfg.inference.max_new_tokens = 40
    cfg.inference.depth, cfg.inference.top_k, cfg.inference.total_tokens = 4, 4, 12
    cfg.inference.budget, cfg.inference.budget_rounds = 24, 5
    report = inference.run(cfg, [])
    row = report["strategies"][0]
    assert report["lossless"] and row["identical"] == 6
    assert row["base_loop_identical_to_generate"] == 6
    assert row["tau"] > 1.0, "the trained drafter never got a token accepted: acceptance paths are untested"


def test_export_round_trip_reproduces_logits(trained):
    cfg = trained
    out = export.run(cfg, [])
    base = load_base(cfg.base)
    a = EagleDrafter.from_pretrained(cfg.training.output_dir).attach_base(base.embed_tokens, base.lm_head).eval()
    b = EagleDrafter.from_pretrained(out).attach_base(base.embed_tokens, base.lm_head).eval()
    h = torch.randn(1, 9, 64)
    ids = torch.randint(0, 500, (1, 9))
    pos = torch.arange(9)[None]
    assert torch.equal(a.logits(a(h, ids, pos)), b.logits(b(h, ids, pos)))


def test_export_refuses_unknown_formats_and_drafters_a_format_cannot_hold(trained):
    cfg = trained
    cfg.export.to = "sglangg"
    with pytest.raises(ConfigError, match="sglang"):
        export.run(cfg, [])
    cfg.export.to = "hf"  # a plain HF folder holds a classic draft LM, not an EAGLE-2 drafter
    with pytest.raises(ConfigError, match="export.to hf: writes .*classic_drafter .*this is a eagle2 drafter"):
        export.run(cfg, [])
    cfg.export.to, cfg.export.out = "vllm", str(Path(cfg.export.out) / "vllm")  # EAGLE-2 → vLLM's eagle method
    export.run(cfg, [])
    assert "fc.weight" in load_file(str(Path(cfg.export.out) / "model.safetensors"))
    cfg.export.to, cfg.export.out = "specforge_het", str(Path(cfg.export.out).parent)


def test_bad_checkpoint_gets_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="missing drafter_config.json"):
        EagleDrafter.from_pretrained(tmp_path)
    (tmp_path / "drafter_config.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="'format' is 'other'"):
        EagleDrafter.from_pretrained(tmp_path)


def test_missing_base_gets_one_clear_error(tmp_path):
    cfg = make_cfg(tmp_path, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no model at"):
        load_base(cfg.base)


def test_heterogeneous_drafter_through_train_and_inference(dataset, tmp_path):
    """A Qwen3 draft layer at half width, own embedding, reduced vocabulary: trained by the train entry point on
    the data_gen dataset, reloaded by inference, lossless."""
    cfg = make_cfg(tmp_path, dataset.base.model_name_or_path, dataset.data.conversations,
                   data__dataset_dir=dataset.data.dataset_dir, modeling__draft_family="qwen3",
                   modeling__draft_hidden_size=32, modeling__embedding="own", modeling__draft_vocab_size=200,
                   training__max_steps=30, training__learning_rate=3e-3, training__logging_steps=10)
    train.run(cfg, [])
    out = Path(cfg.training.output_dir)
    state = load_file(str(out / "model.safetensors"))
    assert state["lm_head.weight"].shape == (200, 64) and state["d2t"].dtype == torch.int64
    assert state["out_proj.weight"].shape == (64, 32) and state["embed.weight"].shape[1] == 32
    assert json.loads((out / "drafter_config.json").read_text())["draft_config"]["model_type"] == "qwen3"
    log = [h for h in json.loads((out / "train_log.json").read_text()) if "loss" in h]
    assert log[-1]["loss"] < log[0]["loss"]
    cfg.inference.prompts, cfg.inference.num_prompts, cfg.inference.prompt_offset = cfg.data.conversations, 4, 30
    cfg.inference.max_new_tokens = 24
    cfg.inference.depth, cfg.inference.top_k, cfg.inference.total_tokens = 3, 3, 8
    report = inference.run(cfg, [])
    assert report["lossless"] and all(r["identical"] == 4 for r in report["strategies"])


def test_eagle3_through_data_gen_train_eval_and_inference(tiny_base, tiny_conversations, tmp_path):
    """--@eagle3: data_gen captures the default feature layers, train runs the TTT unroll with held-out
    evaluation (eval.json / eval.png with the simulated τ), inference is lossless and reports the simulated τ."""
    from specforge_het.config.cli import resolve_config

    cfg, presets = resolve_config(["--@eagle3"])
    base_cfg = make_cfg(tmp_path, tiny_base, tiny_conversations, training__max_steps=24,
                        training__learning_rate=3e-3, training__eval_fraction=0.2, training__eval_steps=12,
                        training__eval_depth=3, algorithm__ttt_length=3)
    base_cfg.algorithm.name, base_cfg.modeling.lm_head = cfg.algorithm.name, cfg.modeling.lm_head
    data_gen.run(base_cfg, presets)
    manifest = json.loads((Path(base_cfg.data.dataset_dir) / "manifest.json").read_text())
    assert manifest["aux_layer_ids"] == [0, 0, 0]  # 2-layer base: blocks 0..N−2, the ones SGLang can capture
    train.run(base_cfg, presets)
    out = Path(base_cfg.training.output_dir)
    history = json.loads((out / "eval.json").read_text())
    assert [h["step"] for h in history] == [12, 24] and (out / "eval.png").stat().st_size > 1000
    assert all(1.0 <= h["eval_tau_sim"] <= 4.0 and "eval_acc_2" in h for h in history)
    assert json.loads((out / "drafter_config.json").read_text())["architecture"] == "eagle3_drafter"
    base_cfg.inference.prompts, base_cfg.inference.num_prompts = base_cfg.data.conversations, 4
    base_cfg.inference.prompt_offset, base_cfg.inference.max_new_tokens = 30, 24
    base_cfg.inference.depth, base_cfg.inference.top_k, base_cfg.inference.total_tokens = 3, 3, 8
    report = inference.run(base_cfg, presets)
    assert report["lossless"] and all(r["identical"] == 4 for r in report["strategies"])
    assert 1.0 <= report["strategies"][0]["tau_simulated"] <= 4.0


def test_classic_draft_through_train_with_eval_and_inference(dataset, tmp_path):
    cfg = make_cfg(tmp_path, dataset.base.model_name_or_path, dataset.data.conversations,
                   data__dataset_dir=dataset.data.dataset_dir, algorithm__name="classic_draft",
                   modeling__draft_hidden_size=32, modeling__draft_layers=2, training__max_steps=20,
                   training__learning_rate=3e-3, training__eval_fraction=0.2, training__eval_steps=10,
                   training__eval_depth=3)
    train.run(cfg, [])
    out = Path(cfg.training.output_dir)
    assert json.loads((out / "drafter_config.json").read_text())["architecture"] == "classic_drafter"
    assert [h["step"] for h in json.loads((out / "eval.json").read_text())] == [10, 20]
    cfg.inference.prompts, cfg.inference.num_prompts, cfg.inference.prompt_offset = cfg.data.conversations, 3, 30
    cfg.inference.max_new_tokens, cfg.inference.depth, cfg.inference.top_k, cfg.inference.total_tokens = 20, 3, 3, 8
    report = inference.run(cfg, [])
    assert report["lossless"] and all(r["identical"] == 3 for r in report["strategies"])


def test_batched_inference_and_question_file_benchmark(trained, tmp_path):
    """inference with batch 3 stays lossless; the benchmark runner reads MT-bench (two turns), HumanEval and GSM8K
    files, decodes every turn with base-only and each strategy, and writes its table, JSON and histogram PNG."""
    import copy

    from specforge_het.inference import benchmark

    cfg = copy.deepcopy(trained)
    cfg.inference.strategy, cfg.inference.batch_size = "all", 3
    cfg.inference.prompts, cfg.inference.num_prompts, cfg.inference.prompt_offset = cfg.data.conversations, 6, 30
    cfg.inference.max_new_tokens, cfg.inference.budget, cfg.inference.budget_rounds = 24, 24, 5
    cfg.inference.output_dir = str(tmp_path / "inference")
    report = inference.run(cfg, [])
    assert report["lossless"] and all(r["identical"] == 6 for r in report["strategies"])
    assert (tmp_path / "inference" / "acceptance.png").stat().st_size > 1000
    assert len(report["strategies"][0]["acceptance_by_depth"]) == cfg.inference.depth

    heads = [json.loads(line)["messages"][0]["content"] for line in open(cfg.data.conversations)][:8]
    files = {"mt_bench": [{"question_id": i, "turns": [heads[i], heads[i + 4]]} for i in range(4)],
             "humaneval": [{"task_id": f"t/{i}", "prompt": h} for i, h in enumerate(heads)],
             "gsm8k": [{"question": "A box holds 3 coins. How many coins are in 4 boxes?", "answer": "#### 12"}]}
    for name, rows in files.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        setattr(cfg.benchmark, name, str(tmp_path / f"{name}.jsonl"))
    cfg.benchmark.max_samples, cfg.benchmark.output_dir = 3, str(tmp_path / "bench")
    cfg.inference.strategy = "both"
    report = benchmark.run(cfg, [])
    assert report["lossless"]
    assert [(r["task"], r["strategy"], r["turns"]) for r in report["rows"]] == [
        ("mt_bench", "chain", 6), ("mt_bench", "tree", 6), ("gsm8k", "chain", 1), ("gsm8k", "tree", 1),
        ("humaneval", "chain", 3), ("humaneval", "tree", 3)]
    assert all(r["identical"] == r["turns"] for r in report["rows"])
    for r in report["rows"]:  # τ per turn number: pooled τ lies between them; one turn → the pooled τ itself
        by_turn = r["tau_by_turn"]
        assert len(by_turn) == (2 if r["task"] == "mt_bench" else 1) and min(by_turn) >= 1
        assert min(by_turn) - 1e-9 <= r["tau"] <= max(by_turn) + 1e-9
    table = (tmp_path / "bench" / "summary.md").read_text()
    assert "τ by turn (turn 1 / turn 2 ...): mt_bench/chain " in table
    assert "| mt_bench | tree |" in table and (tmp_path / "bench" / "resolved_config.json").is_file()

    shapes = copy.deepcopy(cfg)  # benchmark.shapes: these shapes instead of the strategies, one row each
    shapes.benchmark.humaneval = shapes.benchmark.gsm8k = None
    shapes.benchmark.shapes, shapes.benchmark.output_dir = ["chain:2", "tree:2:3:5"], str(tmp_path / "shapes")
    report = benchmark.run(shapes, [])
    assert report["lossless"] and [(r["strategy"], r["depth"], r["top_k"], r["total_tokens"], r["identical"])
                                   for r in report["rows"]] == [("chain:2", 2, 1, 2, 6), ("tree:2:3:5", 2, 3, 5, 6)]

    (tmp_path / "bad.jsonl").write_text('{"question_id": 1, "turns": "not a list"}\n')
    cfg.benchmark.mt_bench = str(tmp_path / "bad.jsonl")
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: a mt_bench row needs 'turns'"):
        benchmark.run(cfg, [])
