"""data_gen at scale: chat-template masks, aux layers, split/merge, data-parallel, corruption, EAGLE .pt,
online mode."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from specforge_het import data_gen, train
from specforge_het.algorithms import get_loss
from specforge_het.config import ConfigError
from specforge_het.data.conversations import TokenizedConversations, read_conversations, tokenize_conversation
from specforge_het.data.eagle_pt import EaglePtDataset
from specforge_het.data.regenerate import complete, regenerate_conversations
from specforge_het.data.shards import HiddenStateDataset, collate, shard_name
from specforge_het.modeling.base import load_base

from conftest import make_cfg

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "specforge_het" / "configs" / "chat_templates"
SPECIAL = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>", "<think>",
           "</think>"]
CONV = [  # reasoning in the last assistant turn: the model generates it, so it is trained on
    {"role": "system", "content": "You write Python."},
    {"role": "user", "content": "Sort a list."},
    {"role": "assistant", "content": "Use sorted(xs)."},
    {"role": "user", "content": "In place?"},
    {"role": "assistant", "content": "<think>\nlist method\n</think>\n\nCall xs.sort()  "},
]
CONV_HISTORY_REASONING = [  # reasoning in an earlier turn: Qwen3-style templates drop it from the history
    {"role": "user", "content": "Sort a list."},
    {"role": "assistant", "content": "<think>\nbuiltin\n</think>\n\nUse sorted(xs)."},
    {"role": "user", "content": "In place?"},
    {"role": "assistant", "content": "Call xs.sort()"},
]


def runs(ids, mask):
    """Contiguous masked runs as token lists."""
    out, cur = [], []
    for t, m in zip(ids, mask):
        if m:
            cur.append(t)
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


@pytest.fixture
def chat_tok(tiny_base):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    tok.add_tokens(SPECIAL, special_tokens=True)
    return tok


@pytest.mark.parametrize("template,conv,expected", [
    ("llama3.jinja", CONV, ["Use sorted(xs).<|eot_id|>", "<think>\nlist method\n</think>\n\nCall xs.sort()<|eot_id|>"]),
    ("chatml.jinja", CONV, ["Use sorted(xs).<|im_end|>",
                            "<think>\nlist method\n</think>\n\nCall xs.sort()  <|im_end|>"]),
    ("qwen3_style.jinja", CONV, ["Use sorted(xs).<|im_end|>",
                                 "<think>\nlist method\n</think>\n\nCall xs.sort()  <|im_end|>"]),
    # The history turn loses its reasoning; the last turn gets a template-made empty <think> block, outside the mask.
    ("qwen3_style.jinja", CONV_HISTORY_REASONING, ["Use sorted(xs).<|im_end|>", "Call xs.sort()<|im_end|>"]),
    ("chatml.jinja", CONV_HISTORY_REASONING, ["<think>\nbuiltin\n</think>\n\nUse sorted(xs).<|im_end|>",
                                              "Call xs.sort()<|im_end|>"]),
])
def test_assistant_mask_is_exact_under_real_templates(chat_tok, template, conv, expected):
    chat_tok.chat_template = (TEMPLATES / template).read_text()
    ids, mask = tokenize_conversation(chat_tok, conv, 10_000)
    assert [chat_tok.decode(r) for r in runs(ids, mask)] == expected
    text = chat_tok.decode(ids)
    assert all(m["content"].split("</think>")[-1].strip() in text for m in conv)
    if template == "qwen3_style.jinja" and conv is CONV_HISTORY_REASONING:
        assert "<think>\n\n</think>\n\nCall" in text  # the empty block is there, just not trained on


def test_generation_marked_template_uses_hf_mask(chat_tok, tiny_base):
    from specforge_het.demo_base import CHAT_TEMPLATE

    chat_tok.chat_template = CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "def f(x):\n"}, {"role": "assistant", "content": "    return x\n"}]
    ids, mask = tokenize_conversation(chat_tok, msgs, 10_000)
    (run,) = [chat_tok.decode(r) for r in runs(ids, mask)]
    # Byte-level BPE merges "\n" + "   " across the turn boundary; a token overlapping the answer is the answer's.
    assert run == "\n    return x\n" + chat_tok.eos_token


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_base, tiny_conversations):
    tmp = tmp_path_factory.mktemp("single")
    cfg = make_cfg(tmp, tiny_base, tiny_conversations, data__shard_size=8, data__aux_layer_ids=[0, 1])
    data_gen.run(cfg, [])
    return cfg


def samples_of(path):
    ds = HiddenStateDataset(path)
    return [ds[i] for i in range(len(ds))]


def assert_same_samples(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_aux_layers_are_block_outputs(single):
    base = load_base(single.base)
    s = HiddenStateDataset(single.data.dataset_dir)[2]
    out = base.model(s["input_ids"][None], output_hidden_states=True)
    assert s["aux_hidden"].shape == (len(s["input_ids"]), 128)
    # Block 0's output is hidden_states[1]; block 1 is the last block: HF reports it after the final norm,
    # we capture the block's own output (before the norm).
    assert torch.equal(s["aux_hidden"][:, :64], out.hidden_states[1][0].to(torch.bfloat16))
    normed = base.model.model.norm(s["aux_hidden"][:, 64:].float())
    assert torch.allclose(normed, out.hidden_states[2][0], atol=0.05)
    assert not torch.allclose(s["aux_hidden"][:, 64:].float(), out.hidden_states[2][0], atol=0.05)


def test_ds_range_split_then_merge_equals_single_run(single, tmp_path):
    n = HiddenStateDataset(single.data.dataset_dir).manifest["num_samples"]
    parts = []
    for a, b in [(0, 19), (19, n)]:
        cfg = make_cfg(tmp_path / f"p{a}", single.base.model_name_or_path, single.data.conversations,
                       data__shard_size=8, data__aux_layer_ids=[0, 1], data__ds_range=[a, b])
        data_gen.run(cfg, [])
        parts.append(cfg.data.dataset_dir)
    cfg = make_cfg(tmp_path / "m", single.base.model_name_or_path, data__merge_from=parts)
    data_gen.run(cfg, [])
    assert_same_samples(samples_of(cfg.data.dataset_dir), samples_of(single.data.dataset_dir))
    manifest = (Path(cfg.data.dataset_dir) / "manifest.json").read_text()
    data_gen.run(cfg, [])  # the same merge again (a script rerun): reused, nothing rewritten
    assert (Path(cfg.data.dataset_dir) / "manifest.json").read_text() == manifest
    cfg.data.merge_from = parts[:1]  # another merge into the same folder: refused
    with pytest.raises(ConfigError, match="already holds another dataset"):
        data_gen.run(cfg, [])


def test_merge_refuses_incompatible_sets(single, tmp_path, tiny_base, tiny_conversations):
    other = make_cfg(tmp_path / "o", tiny_base, tiny_conversations, data__shard_size=8, data__max_samples=10)
    data_gen.run(other, [])  # no aux layers
    cfg = make_cfg(tmp_path / "m", tiny_base, data__merge_from=[single.data.dataset_dir, other.data.dataset_dir])
    with pytest.raises(ConfigError, match="aux_layer_ids"):
        data_gen.run(cfg, [])


def test_accelerate_two_processes_equals_single_run(single, tmp_path):
    out = tmp_path / "ddp"
    # --multi_gpu selects accelerate's torchrun launcher; without CUDA the processes talk over gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "specforge_het.data_gen",
           "--base.model_name_or_path", single.base.model_name_or_path,
           "--data.conversations", single.data.conversations, "--data.dataset_dir", str(out),
           "--data.shard_size", "8", "--data.aux_layer_ids", "[0, 1]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_samples(samples_of(out), samples_of(single.data.dataset_dir))


def test_flipped_byte_is_detected_and_named(single, tmp_path):
    import shutil

    dst = tmp_path / "ds"
    shutil.copytree(single.data.dataset_dir, dst)
    path = dst / shard_name(2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    ds = HiddenStateDataset(dst)
    ds[0]  # other shards still load
    with pytest.raises(ConfigError, match="shard_00002.*corrupt"):
        ds[16]


def test_official_eagle_pt_layout_reads_and_trains(tmp_path, tiny_base):
    d = tmp_path / "eagle"
    d.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        T = 20 + i
        torch.save({"input_ids": torch.randint(0, 500, (1, T), generator=g),
                    "hidden_state": torch.randn(1, T, 64, generator=g).to(torch.bfloat16),
                    "loss_mask": torch.ones(1, T, dtype=torch.long)}, d / f"data_{i}.pt")
    ds = EaglePtDataset(d)
    assert len(ds) == 6 and ds[1]["hidden"].shape == (21, 64) and ds[1]["input_ids"].shape == (21,)
    cfg = make_cfg(tmp_path, tiny_base, data__format="eagle_pt", training__max_steps=2, training__save_steps=100)
    cfg.data.dataset_dir = str(d)
    train.run(cfg, [])
    assert (Path(cfg.training.output_dir) / "model.safetensors").is_file()
    torch.save({"input_ids": torch.zeros(3)}, d / "data_9.pt")
    with pytest.raises(ConfigError, match=r"data_9\.pt: expected keys"):
        EaglePtDataset(d)[6]


def test_online_and_offline_give_the_same_loss(tmp_path, tiny_base, tiny_conversations):
    cfg = make_cfg(tmp_path, tiny_base, tiny_conversations, data__hidden_dtype="float32", algorithm__noise_std=0.0)
    data_gen.run(cfg, [])
    base = load_base(cfg.base)
    offline = collate([HiddenStateDataset(cfg.data.dataset_dir)[i] for i in range(4)])
    cfg.data.mode = "online"
    online_ds = train.training_dataset(cfg, base)
    assert isinstance(online_ds, TokenizedConversations)
    online = collate([online_ds[i] for i in range(4)])
    assert "hidden" not in online and torch.equal(online["input_ids"], offline["input_ids"])
    drafter = train.make_drafter(cfg, base)
    trainer = train.DrafterTrainer(model=drafter, args=train.training_arguments(cfg, use_cpu=True),
                                   train_dataset=online_ds, data_collator=collate, loss_fn=get_loss("eagle2"),
                                   algorithm_cfg=cfg.algorithm, base=base)
    trainer.model.eval()
    with torch.no_grad():
        a = trainer.compute_loss(trainer.model, dict(offline))
        b = trainer.compute_loss(trainer.model, dict(online))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_regeneration_batched_equals_one_by_one(tiny_base, tiny_conversations):
    base = load_base(make_cfg(Path("."), tiny_base).base)
    convs, _ = read_conversations(tiny_conversations, limit=5)
    prompts = [base.tokenizer(c[0]["content"], add_special_tokens=False)["input_ids"] for c in convs]
    batched = complete(base, prompts, 12, temperature=0.0, batch_size=5)
    single = [complete(base, [p], 12, temperature=0.0, batch_size=1)[0] for p in prompts]
    assert batched == single and all(len(a) > 0 for a in batched)
    regen = regenerate_conversations(base, convs, 12, temperature=0.0, batch_size=5)
    assert [[m["role"] for m in c] for c in regen] == [[m["role"] for m in c] for c in convs]
    assert regen[0][1]["content"] == base.tokenizer.decode(batched[0], skip_special_tokens=True)
