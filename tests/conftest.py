"""Shared fixtures: a tiny random-weight Llama base with a real BPE tokenizer, saved locally (no hub access)."""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch

from specforge_het.config import RunConfig
from specforge_het.config.schema import set_key
from specforge_het.data.stdlib_corpus import function_heads, stdlib_files
from specforge_het.demo_base import train_tokenizer
from specforge_het.utils.logs import setup_logging

torch.set_num_threads(2)
setup_logging()  # what the entry points set up: INFO lines on stdout, which the tests read


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    """A 2-layer Llama (hidden 64) with a 512-token BPE trained on a slice of the stdlib."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny_base")
    texts = [f.text for f in stdlib_files(max_mb=0.6)]
    tok = train_tokenizer(texts, vocab_size=512)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_conversations(tmp_path_factory, tiny_base) -> str:
    """Conversations whose answers are the tiny base's own greedy continuations (self-distillation)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    heads = [h for f in stdlib_files(max_mb=0.6) for h in function_heads(f)][:48]
    rows = []
    with torch.no_grad():
        for h in heads:
            ids = tok(h, return_tensors="pt", add_special_tokens=False)["input_ids"][:, -48:]
            gen = model.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.eos_token_id)
            answer = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
            rows.append({"messages": [{"role": "user", "content": tok.decode(ids[0])},
                                      {"role": "assistant", "content": answer}]})
    path = tmp_path_factory.mktemp("convs") / "conversations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def make_cfg(tmp_path, base: str, conversations: str | None = None, **overrides) -> RunConfig:
    cfg = RunConfig()
    set_key(cfg, "base.model_name_or_path", base, "test")
    set_key(cfg, "data.dataset_dir", str(tmp_path / "dataset"), "test")
    set_key(cfg, "training.output_dir", str(tmp_path / "drafter"), "test")
    set_key(cfg, "inference.drafter_path", str(tmp_path / "drafter"), "test")
    set_key(cfg, "inference.output_dir", str(tmp_path / "inference"), "test")
    set_key(cfg, "export.checkpoint", str(tmp_path / "drafter"), "test")
    set_key(cfg, "export.out", str(tmp_path / "export"), "test")
    set_key(cfg, "data.shard_size", 16, "test")
    if conversations:
        set_key(cfg, "data.conversations", conversations, "test")
    for k, v in overrides.items():
        set_key(cfg, k.replace("__", "."), v, "test")
    return cfg
