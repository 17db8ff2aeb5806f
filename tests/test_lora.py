"""A draft layer initialised from a base decoder layer and trained through LoRA adapters (peft): only the
adapters (and the drafter's own fc) move, the saved drafter holds merged weights that differ from the base layer by
a rank-r update, it decodes losslessly, exports to SGLang, and a checkpoint resumes to the same drafter."""
import importlib.util
import shutil

import pytest
import torch
from safetensors.torch import load_file

from specforge_het import data_gen, train
from specforge_het.config.schema import ConfigError
from specforge_het.inference.engine import base_decode, speculative_decode
from specforge_het.inference.strategies import eos_ids
from specforge_het.modeling.base import decoder_parts, load_base
from specforge_het.modeling.drafter_base import load_drafter
from specforge_het.modeling.lora import ADAPTERS_NAME

from conftest import make_cfg

pytestmark = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft is not installed")
RANK, BLOCK = 4, 1
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_cfg(work, tiny_base, tiny_conversations, out_name="drafter", **extra):
    cfg = make_cfg(work, tiny_base, tiny_conversations, modeling__init_from_base_layer=BLOCK,
                   modeling__lora_rank=RANK, modeling__lora_alpha=8.0, training__max_steps=12,
                   training__save_steps=6, training__learning_rate=3e-3, training__warmup_steps=0,
                   training__logging_steps=6, **extra)
    cfg.training.output_dir = str(work / out_name)
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base, tiny_conversations):
    work = tmp_path_factory.mktemp("lora")
    cfg = lora_cfg(work, tiny_base, tiny_conversations)
    data_gen.run(cfg, [])
    return cfg, train.run(cfg, [])


def test_lora_drafter_is_the_base_layer_plus_a_low_rank_update(trained):
    cfg, out = trained
    base = load_base(cfg.base)
    block = decoder_parts(base.model)[0][BLOCK].state_dict()
    saved = load_file(str(out / "model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in saved)  # merged, plain names
    for name in TARGETS:
        key = next(k for k in saved if k.endswith(f"{name}.weight"))
        delta = saved[key] - block[key.removeprefix("layers.0.")]
        assert delta.abs().max() > 0, f"{key} did not train"
        assert torch.linalg.matrix_rank(delta, atol=1e-5) <= RANK, key
    # Frozen, not adapted: the post-attention norm is the base block's, bit for bit.
    assert torch.equal(saved["layers.0.post_attention_layernorm.weight"], block["post_attention_layernorm.weight"])
    adapters = load_file(str(out / ADAPTERS_NAME))
    assert len(adapters) == 2 * len(TARGETS) and all("lora_" in k for k in adapters)


def test_lora_drafter_decodes_losslessly_and_exports(trained, tmp_path):
    cfg, out = trained
    base = load_base(cfg.base)
    drafter = load_drafter(out).attach_base(base.embed_tokens, base.lm_head).check_base(base).eval()
    assert drafter.meta["lora"]["rank"] == RANK and drafter.meta["init_from_base_layer"] == BLOCK
    eos = eos_ids(base)
    texts = ["def read(path):\n    ", "import os\n", "class Parser:\n    def __init__(self", "# Copyright",
             "    return self._", "for i in range("]
    for text in texts:
        prompt = base.tokenizer(text)["input_ids"]
        ref = base_decode(base, prompt, 16, eos).tokens
        for params in (dict(depth=4, top_k=1, total_tokens=4), dict(depth=3, top_k=3, total_tokens=10)):
            assert speculative_decode(base, drafter, prompt, 16, eos, **params).tokens == ref, (text, params)
    try:
        from specforge_het.export.sglang_check import check_sglang_export, sglang_models_dir

        sglang_models_dir()
    except ConfigError:
        pytest.skip("SGLang's sources are needed for the export check (CI installs them)")
    from specforge_het.export.to_sglang import export_sglang

    check_sglang_export(export_sglang(drafter, tmp_path / "sglang", None, "BASE", 5, 8, 32))


def test_lora_checkpoint_resumes_to_the_same_drafter(trained, tmp_path, tiny_base, tiny_conversations):
    cfg, out = trained
    again = lora_cfg(tmp_path, tiny_base, tiny_conversations, out_name="resumed")
    again.data.dataset_dir = cfg.data.dataset_dir
    shutil.copytree(out / "checkpoint-6", tmp_path / "resumed" / "checkpoint-6")  # as if killed after step 6
    resumed = train.run(again, [])
    a, b = load_file(str(out / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_lora_settings_are_checked(trained, tmp_path, tiny_base, tiny_conversations):
    cfg, _ = trained
    base = load_base(cfg.base)
    bad = make_cfg(tmp_path, tiny_base, tiny_conversations, modeling__lora_rank=4)
    with pytest.raises(ConfigError, match="needs modeling.init_from_base_layer"):
        train.make_drafter(bad, base)
    bad = make_cfg(tmp_path, tiny_base, tiny_conversations, modeling__init_from_base_layer=5)
    with pytest.raises(ConfigError, match=r"expected 0..1 \(the base has 2 blocks"):
        train.make_drafter(bad, base)
    bad = make_cfg(tmp_path, tiny_base, tiny_conversations, modeling__init_from_base_layer=0,
                   modeling__lora_rank=4, modeling__lora_targets=["q_proj", "qkv"])
    with pytest.raises(ConfigError, match=r"\['qkv'\] are not linear layers"):
        train.make_drafter(bad, base)
    # EAGLE-3's attention reads 2·H: q/k/v cannot come from a base block, so they cannot sit frozen under adapters.
    bad = make_cfg(tmp_path, tiny_base, tiny_conversations, algorithm__name="eagle3", data__aux_layer_ids=[0, 1],
                   modeling__init_from_base_layer=1, modeling__lora_rank=4)
    with pytest.raises(ConfigError, match=r"midlayer.self_attn.q_proj.weight.* did not come from the base layer"):
        train.make_drafter(bad, base, feature_layers=[0, 1, 1])
