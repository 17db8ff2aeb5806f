"""Export to SGLang and vLLM draft formats, checked against SGLang's own installed sources; import of official
EAGLE checkpoints (safetensors and .bin) with a round trip to identical drafter outputs."""
import json

import pytest
import torch
from safetensors.torch import load_file

from specforge_het.config.schema import ConfigError
from specforge_het.export.stage import load_any
from specforge_het.export.sglang_check import check_sglang_export
from specforge_het.export.to_sglang import export_sglang
from specforge_het.export.to_vllm import export_vllm

from test_algorithms import make
from test_hetero import tiny_base

try:
    from specforge_het.export.sglang_check import sglang_models_dir

    sglang_models_dir()
except ConfigError:
    pytest.skip("SGLang's sources are needed: pip install --no-deps sglang==0.5.23 (CI does)", allow_module_level=True)


@pytest.fixture(scope="module")
def llama():
    return tiny_base("llama")


def export(drafter, tmp_path, name="sg"):
    return export_sglang(drafter, tmp_path / name, None, "BASE", 5, 8, 32)


def same_outputs(a, b, base, feats_dim):
    torch.manual_seed(0)
    ids = torch.randint(3, 96, (1, 9))
    feats = torch.randn(1, 9, feats_dim)
    pos = torch.arange(9)[None]
    for d in (a, b):
        d.attach_base(base.embed_tokens, base.lm_head).eval()
    with torch.no_grad():
        return torch.equal(a.logits(a(feats, ids, pos)), b.logits(b(feats, ids, pos)))


@pytest.mark.parametrize("modeling", [dict(lm_head="own"), dict(lm_head="shared"),
                                      dict(lm_head="own", embedding="own", draft_hidden_size=16),
                                      dict(lm_head="own", fc_norm=True, norm_output=True)])  # EAGLE-3.1
def test_eagle3_sglang_export_matches_sglang_and_round_trips(llama, modeling, tmp_path):
    drafter = make(llama, "eagle3", **modeling)
    out = export(drafter, tmp_path)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLMEagle3"]
    assert cfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == drafter.feature_layers
    summary = check_sglang_export(out)
    keys = load_file(str(out / "model.safetensors"))
    assert any(k.startswith("midlayer.self_attn.q_proj") for k in keys) and keys["fc.weight"].shape[1] == 3 * 32
    if "draft_hidden_size" in modeling:
        assert cfg["target_hidden_size"] == 32 and "embed_tokens.weight" in keys
    if modeling["lm_head"] == "shared":
        assert cfg["draft_vocab_size"] is None and "lm_head.weight" in summary["from_target"]
    else:
        assert keys["d2t"].dtype == torch.int64
    assert "--speculative-algorithm EAGLE3" in (out / "README.md").read_text()
    flags = bool(modeling.get("fc_norm"))
    assert cfg["fc_norm"] is flags and cfg["norm_output"] is flags
    assert ("fc_norm.2.weight" in keys) is flags and not any(k.startswith("fc_norms.") for k in keys)
    again = load_any(str(out))  # the SGLang layout is the official EAGLE-3 layout: import it back
    assert same_outputs(drafter, again, llama, 96)


def test_reduced_vocab_eagle3_export(llama, tmp_path):
    from specforge_het.families.eagle3.model import build_eagle3_drafter

    used = torch.arange(0, 96, 2)
    drafter = build_eagle3_drafter(llama, [0, 1, 1], own_lm_head=True, draft_vocab=used)
    out = export(drafter, tmp_path)
    check_sglang_export(out)
    keys = load_file(str(out / "model.safetensors"))
    assert json.loads((out / "config.json").read_text())["draft_vocab_size"] == 48
    assert torch.equal(keys["d2t"] + torch.arange(48), used) and int(keys["t2d"].sum()) == 48
    again = load_any(str(out))
    assert again.reduced_vocab and torch.equal(again.d2t, drafter.d2t)
    assert same_outputs(drafter, again, llama, 96)


@pytest.mark.parametrize("base_name,arch", [("llama", "LlamaForCausalLMEagle"), ("qwen2", "Qwen2ForCausalLMEagle")])
def test_eagle2_sglang_export_matches_sglang_and_round_trips(base_name, arch, tmp_path):
    base = tiny_base(base_name)
    drafter = make(base, "eagle2", draft_layers=2)
    out = export(drafter, tmp_path)
    assert json.loads((out / "config.json").read_text())["architectures"] == [arch]
    check_sglang_export(out)
    keys = load_file(str(out / "model.safetensors"))
    assert "layers.0.input_layernorm.weight" not in keys and "layers.1.input_layernorm.weight" in keys
    assert "--speculative-algorithm EAGLE " in (out / "README.md").read_text()
    # Official layout, also as a pickle-free .bin (torch.save of tensors, read back with weights_only=True).
    official = tmp_path / "official_bin"
    official.mkdir()
    torch.save(keys, official / "pytorch_model.bin")
    (official / "config.json").write_text((out / "config.json").read_text())
    for path in (out, official):
        assert same_outputs(drafter, load_any(str(path)), base, 32)


def test_sglang_check_catches_misnamed_and_missing_keys(llama, tmp_path):
    from safetensors.torch import save_file

    out = export(make(llama, "eagle3", lm_head="own"), tmp_path)
    keys = load_file(str(out / "model.safetensors"))
    keys["midlayer.hidden_normm.weight"] = keys.pop("midlayer.hidden_norm.weight")
    save_file(keys, str(out / "model.safetensors"))
    with pytest.raises(ConfigError) as e:
        check_sglang_export(out)
    assert "hidden_normm" in str(e.value) and "model.layers.0.hidden_norm.weight: no key" in str(e.value)
    keys["midlayer.hidden_norm.weight"] = keys.pop("midlayer.hidden_normm.weight")
    keys["fc.weight"] = keys["fc.weight"][:, :64].contiguous()
    save_file(keys, str(out / "model.safetensors"))
    with pytest.raises(ConfigError, match="model.fc.weight: export shape"):
        check_sglang_export(out)


def test_unservable_drafts_are_refused(llama, tmp_path):
    with pytest.raises(ConfigError, match="q/k norms"):
        export(make(llama, "eagle3", lm_head="own", draft_family="qwen3"), tmp_path)
    with pytest.raises(ConfigError, match=r"draft.s differs \(16 vs"):
        export(make(llama, "eagle2", draft_hidden_size=16), tmp_path)
    with pytest.raises(ConfigError, match="vLLM serves EAGLE-3 midlayers of the llama and qwen3 families"):
        export_vllm(make(llama, "eagle3", lm_head="own", draft_family="gemma2"), tmp_path / "v", None, "BASE", 5)
    biased = make(llama, "eagle2", fc_bias=True)
    with torch.no_grad():
        biased.fc.bias.fill_(0.1)
    with pytest.raises(ConfigError, match="fc has no bias"):
        export_vllm(biased, tmp_path / "v1", None, "BASE", 5)


def test_vllm_exports_of_other_widths_and_eagle1(llama, tmp_path):
    """A draft of another width is written with target_hidden_size (vLLM sizes its fc from it); an EAGLE-1/2 draft
    in the layout of vLLM's `eagle` method: fc without bias, layers.N.*, no input norm on layer 0. (That vLLM serves
    both is proven by vLLM itself in test_serving.py.)"""
    narrow = export_vllm(make(llama, "eagle3", lm_head="own", embedding="own", draft_hidden_size=16),
                         tmp_path / "narrow", None, "BASE", 5)
    cfg = json.loads((narrow / "config.json").read_text())
    assert cfg["target_hidden_size"] == 32 and cfg["transformer_layer_config"]["hidden_size"] == 16
    assert load_file(str(narrow / "model.safetensors"))["fc.weight"].shape[1] == 3 * 32
    eagle1 = export_vllm(make(llama, "eagle2"), tmp_path / "e1", None, "BASE", 5)
    keys = load_file(str(eagle1 / "model.safetensors")).keys()
    assert "fc.weight" in keys and "fc.bias" not in keys and "layers.0.input_layernorm.weight" not in keys
    assert json.loads((eagle1 / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_vllm_speculators_export(llama, tmp_path):
    drafter = make(llama, "eagle3", lm_head="own")
    out = export_vllm(drafter, tmp_path / "v", None, "BASE", 5)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["speculators_model_type"] == "eagle3" and cfg["architectures"] == ["Eagle3Speculator"]
    assert cfg["speculators_config"]["proposal_methods"][0]["speculative_tokens"] == 5
    assert cfg["eagle_aux_hidden_state_layer_ids"] == [k + 1 for k in drafter.feature_layers]
    assert cfg["transformer_layer_config"]["hidden_size"] == 32
    keys = load_file(str(out / "model.safetensors"))
    assert any(k.startswith("layers.0.") for k in keys) and not any(k.startswith("midlayer.") for k in keys)
    assert "d2t" not in keys and "t2d" not in keys  # full vocabulary: vLLM has no draft_id_to_target_id then
    assert cfg["fc_norm"] is False and cfg["norm_output"] is False


def test_vllm_export_of_eagle3_1_flags(llama, tmp_path):
    """EAGLE-3.1: vLLM's update_eagle3 reads fc_norm / norm_output from the top of the speculators config, and its
    Eagle3LlamaForCausalLM then has model.fc_norm.{i}.weight, one RMSNorm per fused feature."""
    drafter = make(llama, "eagle3", lm_head="own", fc_norm=True, norm_output=True)
    out = export_vllm(drafter, tmp_path / "v", None, "BASE", 5)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["fc_norm"] is True and cfg["norm_output"] is True
    keys = load_file(str(out / "model.safetensors"))
    assert {f"fc_norm.{i}.weight" for i in range(3)} <= keys.keys()
    assert torch.equal(keys["fc_norm.1.weight"], drafter.fc_norms[1].weight)


@pytest.mark.parametrize("layers,n,engine,ok", [([0, 1, 2], 4, "sglang", True), ([0, 2, 3], 4, "sglang", False),
                                                ([0, 2, 3], 4, "vllm", True), ([0, 2, 4], 4, "vllm", False),
                                                ([0, 0, 0], 2, "vllm", False), ([1, 1, 2], 8, "sglang", False)])
def test_capture_rules_of_each_engine(layers, n, engine, ok):
    """SGLang captures blocks 0..N−2, vLLM 0..N−1, and both record a listed layer once."""
    from specforge_het.export.capture import check_capture

    if ok:
        check_capture(layers, n, engine)
    else:
        with pytest.raises(ConfigError, match=f"{engine} cannot feed this drafter"):
            check_capture(layers, n, engine)


@pytest.mark.parametrize("tied", [False, True])
def test_classic_draft_exports_as_a_plain_hf_lm(llama, tmp_path, tied):
    """export.to hf: the classic draft LM as its own HF folder, which transformers loads back into the same logits
    (tied embeddings saved once); an EAGLE drafter is refused in one line."""
    from transformers import AutoModelForCausalLM

    from specforge_het.export.to_hf import export_hf

    modeling = {}
    if tied:  # a pretrained small LM with tied embeddings (SmolLM2's layout) as the starting draft
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(vocab_size=llama.vocab_size, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                     tie_word_embeddings=True)).save_pretrained(tmp_path / "small_lm")
        modeling["draft_model_path"] = str(tmp_path / "small_lm")
    drafter = make(llama, "classic_draft", **modeling)
    out = export_hf(drafter, tmp_path / "hf", None, "BASE", 4)
    cfg = json.loads((out / "config.json").read_text())
    assert "_attn_implementation" not in cfg and cfg["architectures"] == ["LlamaForCausalLM"]
    assert ("lm_head.weight" in load_file(str(out / "model.safetensors"))) is not tied
    spec = json.loads((out / "speculative_config.json").read_text())
    assert spec == {"method": "draft_model", "model": str(out), "num_speculative_tokens": 4}
    lm = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(3, 96, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(lm(ids).logits, drafter.token_logits(ids), rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="export.to hf: writes .*classic_drafter .*this is a eagle3 drafter"):
        export_hf(make(llama, "eagle3"), tmp_path / "e3", None, "BASE", 4)
