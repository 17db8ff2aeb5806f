"""The serving tier: every export we offer is loaded and served by the real engine — vLLM's CPU build (`vllm.LLM`,
offline API) and SGLang's own draft classes running their own `load_weights` — in the serving environment
(specforge_het/serving/env.py, built once per machine). The base is made here (a random-weight Llama shaped for
vLLM's CPU kernels, head_dim 32); the drafters are trained here on its own greedy text. For each export: the engine
loads it, its greedy output equals transformers' greedy output of the base, and its per-position acceptance equals
our reference decoder's chain of the same depth (tolerances: specforge_het/serving/parity.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_cfg
from specforge_het import export, train
from specforge_het.config import ConfigError
from specforge_het.data.conversations import prompt_ids, read_conversations
from specforge_het.inference.engine import Sampling, base_decode_batch, hf_greedy
from specforge_het.modeling.base import load_base
from specforge_het.modeling.drafter_base import load_drafter
from specforge_het.serving import check_with_sglang, check_with_vllm_loader, run_vllm
from specforge_het.serving.parity import compare, rate_variance, reference_chain

from specforge_het.serving import env

pytestmark = [pytest.mark.serving,
              pytest.mark.skipif(not env.is_ready(), reason="the serving environment is not built: run "
                                 "`python -m specforge_het.serving.env` (CI builds it before the tests)")]
DEPTH, MAX_NEW, N_PROMPTS = 3, 40, 6
DRAFTERS = {  # name → (algorithm, config overrides, engines that serve it); the first trains longest
    "eagle3_full": ("eagle3", {"training__max_steps": 200, "training__learning_rate": 1e-2}, ("vllm", "sglang")),
    "eagle3_reduced": ("eagle3", {"modeling__draft_vocab_size": 256}, ("vllm", "sglang")),
    "eagle3_narrow": ("eagle3", {"modeling__draft_hidden_size": 64, "modeling__embedding": "own"}, ("vllm", "sglang")),
    "eagle3_wide": ("eagle3", {"modeling__draft_hidden_size": 192, "modeling__embedding": "own"}, ("vllm", "sglang")),
    "eagle3_qwen3": ("eagle3", {"modeling__draft_family": "qwen3"}, ("vllm",)),
    "eagle3_shared_head": ("eagle3", {"modeling__lm_head": "shared"}, ("vllm", "sglang")),
    "eagle3_1": ("eagle3", {"modeling__fc_norm": True, "modeling__norm_output": True}, ("vllm", "sglang")),
    "eagle2": ("eagle2", {}, ("vllm", "sglang")),
    # DFlash: a block of DEPTH + 1 (vLLM drafts block_size − 1 tokens), 2 Qwen3 layers (vLLM's DFlash layers)
    "dflash": ("dflash", {"modeling__block_size": DEPTH + 1, "modeling__draft_family": "qwen3",
                          "modeling__draft_layers": 2, "algorithm__num_anchors": 16}, ("vllm", "sglang")),
    # DSpark: vLLM's CPU build cannot serve it (its V2 runner, the only one with DSpark, needs Triton): vLLM's own
    # draft class loads it (test_vllm_loads_dspark_parameter_for_parameter); SGLang's own class too.
    "dspark": ("dspark", {"modeling__block_size": DEPTH + 1, "modeling__draft_family": "qwen3",
                          "modeling__draft_layers": 2, "modeling__markov_rank": 16, "algorithm__num_anchors": 16},
               ("vllm", "sglang")),
    # P-EAGLE: 2 layers drafting DEPTH tokens in one forward; vLLM serves it as eagle3 + parallel_drafting (the
    # --speculative-config its export writes)
    "peagle": ("peagle", {"modeling__draft_layers": 2, "modeling__lm_head": "own", "algorithm__parallel_depth": DEPTH,
                          "training__learning_rate": 1e-2}, ("vllm",)),
    # A classic draft LM (same tokenizer) as a plain HF folder (export.to hf), served by vLLM's draft_model method.
    "classic": ("classic_draft", {"modeling__draft_layers": 1, "training__learning_rate": 1e-2}, ("hf",)),
    # A draft LM with its own tokenizer (made in `served`), distilled on the vocabulary intersection; vLLM serves it
    # with draft_model + use_heterogeneous_vocab (its own token-level intersection).
    "cross_vocab": ("classic_draft", {"modeling__draft_model_path": "OTHER_LM", "training__learning_rate": 1e-2},
                    ("hf",)),
}
VLLM_LOAD_ONLY = ("dspark",)
VLLM_SERVED = [n for n, (_, _, engines) in DRAFTERS.items()
               if ("vllm" in engines or "hf" in engines) and n not in VLLM_LOAD_ONLY]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_base):
    """A 4-layer random Llama (hidden 128, 4 heads of 32) with the tiny tokenizer, and conversations of its own
    greedy continuations (what the drafters learn)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from specforge_het.data.stdlib_corpus import function_heads, stdlib_files

    work = tmp_path_factory.mktemp("serving")
    tok = AutoTokenizer.from_pretrained(tiny_base)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)  # peakier next-token distributions: text with structure to learn
    model.save_pretrained(work / "base")
    tok.save_pretrained(work / "base")
    base = load_base(make_cfg(work, str(work / "base")).base)
    heads = [h for f in stdlib_files(max_mb=0.6) for h in function_heads(f)][:96]
    prompts = [tok(h, add_special_tokens=False)["input_ids"][-32:] for h in heads]
    runs = [r for i in range(0, len(prompts), 16) for r in base_decode_batch(base, prompts[i:i + 16], 64, set())]
    rows = [{"messages": [{"role": "user", "content": tok.decode(p)},
                          {"role": "assistant", "content": tok.decode(r.tokens[len(p):])}]}
            for p, r in zip(prompts, runs)]
    (work / "convs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # A small LM with its own tokenizer (384-token BPE from other files; 2 heads of 32 for vLLM's CPU kernels).
    from specforge_het.demo_base import train_tokenizer

    other = train_tokenizer([f.text for f in stdlib_files(max_mb=1.2)][-40:], vocab_size=384)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(other), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                                 eos_token_id=other.eos_token_id, bos_token_id=other.eos_token_id,
                                 pad_token_id=other.eos_token_id)).save_pretrained(work / "other_lm")
    other.save_pretrained(work / "other_lm")
    return work, base


@pytest.fixture(scope="module")
def drafters(served):
    """Each drafter of DRAFTERS trained online (80 steps; 200 for the first), then exported for the engines that
    serve it: → name → the drafter folder, with the exports in its `vllm/` and `sglang/` subfolders."""
    work, base = served
    out = {}
    for name, (algorithm, overrides, engines) in DRAFTERS.items():
        # EAGLE-3 trains its own head (the eagle3 preset's choice) unless the variant says otherwise, unrolled to the
        # chain depth served (TTT 3, half the cost of the preset's 7 at the same τ here)
        eagle3 = {"modeling__lm_head": "own", "algorithm__ttt_length": DEPTH} if algorithm == "eagle3" else {}
        settings = {"training__max_steps": 80, "training__learning_rate": 3e-3, **eagle3, **overrides}
        settings = {k: str(work / "other_lm") if v == "OTHER_LM" else v for k, v in settings.items()}
        cfg = make_cfg(work / name, str(work / "base"), str(work / "convs.jsonl"), algorithm__name=algorithm,
                       data__mode="online", data__aux_layer_ids=[0, 1, 2], training__per_device_train_batch_size=8,
                       training__logging_steps=50, training__save_steps=1000, **settings)
        train.run(cfg, [])
        drafter = Path(cfg.training.output_dir)
        for engine in engines:
            cfg.export.to, cfg.export.out, cfg.export.num_steps = engine, str(drafter / engine), DEPTH
            export.run(cfg, [])
        out[name] = drafter
    return out


@pytest.fixture(scope="module")
def prompts(served):
    work, base = served
    convs, _ = read_conversations(work / "convs.jsonl")
    return [prompt_ids(base.tokenizer, c) for c in convs[-N_PROMPTS:]]


@pytest.fixture(scope="module")
def vllm_results(served, drafters, prompts):
    """One vLLM worker process: the base alone, every drafter at T = 0, and two drafters at T = 1."""
    work, _ = served
    runs = [{"name": "base", "speculative_config": None}]
    for name in VLLM_SERVED:  # the --speculative-config each export wrote, as a user passes it
        folder = drafters[name] / ("hf" if "hf" in DRAFTERS[name][2] else "vllm")
        spec = json.loads((folder / "speculative_config.json").read_text())
        assert spec["model"] == str(folder) and spec["num_speculative_tokens"] == DEPTH
        assert spec.get("use_heterogeneous_vocab", False) == (name == "cross_vocab")
        runs.append({"name": name, "speculative_config": spec})
    for r in runs:
        r.update(prompts=prompts, max_tokens=MAX_NEW, temperature=0.0, seed=0)
    for name in ("eagle3_full", "eagle3_reduced"):  # sampled: three draws per prompt, unseeded (independent)
        runs.append({**runs[1 + VLLM_SERVED.index(name)], "name": f"{name}@T1", "temperature": 1.0, "seed": None,
                     "prompts": prompts * 3})
        runs.append({**runs[-1], "name": f"{name}@T1p", "patch_engine": True})  # the CPU temperature defect fixed
    return {r["name"]: r for r in run_vllm({"base": str(work / "base"), "runs": runs})}


def _ours(served, drafter_dir, prompts, sampling):
    _, base = served
    drafter = load_drafter(drafter_dir).attach_base(base.embed_tokens, base.lm_head).eval()
    return reference_chain(base, drafter, prompts, MAX_NEW, {base.tokenizer.eos_token_id}, DEPTH, sampling)


def test_vllm_serves_the_base_as_transformers_does(served, prompts, vllm_results):
    _, base = served
    r = vllm_results["base"]
    assert r["error"] is None, r.get("traceback")
    refs = [hf_greedy(base, p, MAX_NEW, {base.tokenizer.eos_token_id})[len(p):] for p in prompts]
    assert r["outputs"] == refs


@pytest.mark.parametrize("name", VLLM_SERVED)
def test_vllm_serves_every_export_losslessly_with_our_acceptance(served, drafters, prompts, vllm_results, name):
    r = vllm_results[name]
    assert r["error"] is None, f"vLLM refused the {name} export: {r['error']}\n{r.get('traceback')}"
    assert r["outputs"] == vllm_results["base"]["outputs"], "vLLM's speculative output is not its base greedy output"
    ours = _ours(served, drafters[name], prompts, Sampling())
    assert ours["outputs"] == r["outputs"]
    parity = compare(ours["metrics"], r["metrics"], greedy=True)
    assert parity["passed"], parity
    if name == "eagle3_full":  # a drafter that learned the base: the parity compares busy counters at every depth
        assert parity["tau_engine"] >= 1.5 and min(parity["rates_engine"]) >= 0.1, parity
    if name in ("classic", "cross_vocab"):  # the draft LMs propose tokens the base accepts (through the
        assert parity["tau_engine"] > 1.0, parity  # vocabulary intersection, for the one with its own tokenizer)


def test_the_worker_measures_the_cpu_temperature_defect(vllm_results):
    """vLLM 0.32's CPU build spreads each request's temperature over its draft tokens into an int64 copy of the
    float buffer the rejection sampler then divides by (uninitialised memory): the worker measures it in the engine
    it serves with (a version bump that fixes it turns this test red, and the patched rows can go)."""
    r = vllm_results["eagle3_full@T1"]
    assert r["error"] is None, r.get("traceback")
    assert r["engine_defect"] and "uninitialised" in r["engine_defect"] and not r["patched"]
    assert len(r["defect_probe"]) == 3 and r["defect_probe"] != pytest.approx([0.7] * 3)  # what it spread, as it was
    assert vllm_results["eagle3_full@T1p"]["patched"]
    after = vllm_results["eagle3_reduced@T1"]  # after a patched run in the same process: vLLM's own kernel again
    assert after["engine_defect"] and not after["patched"]


@pytest.mark.xfail(reason="vLLM 0.32's CPU build divides the target logits by uninitialised memory at T > 0 (its "
                          "CPU expand kernel writes the per-token temperatures into an int64 copy: "
                          "test_the_worker_measures_the_cpu_temperature_defect), so its sampled acceptance is "
                          "whatever that memory holds: 14-29 % of first drafts accepted in past runs where E[p(draft)] "
                          "is 1.8 %, none at all on SmolLM2", strict=False)
@pytest.mark.parametrize("name", ["eagle3_full", "eagle3_reduced"])
def test_vllm_sampled_acceptance_matches_ours_within_noise(served, drafters, prompts, vllm_results, name):
    """T = 1 with vLLM's default draft_sample_method ("greedy": the drafter's top token as a point-mass draft)
    against our decoder in the same mode: the per-position acceptance rates agree within sampling noise."""
    _sampled_parity(served, drafters, prompts, vllm_results[f"{name}@T1"], name)


@pytest.mark.parametrize("name", ["eagle3_full", "eagle3_reduced"])
def test_patched_vllm_sampled_acceptance_matches_ours_within_noise(served, drafters, prompts, vllm_results, name):
    """The same with the one defective CPU kernel replaced by an exact torch version (the drafter, proposer and
    rejection sampler stay vLLM's): the export's sampled acceptance is the theory's, as ours is."""
    _sampled_parity(served, drafters, prompts, vllm_results[f"{name}@T1p"], name)


def _sampled_parity(served, drafters, prompts, r, name):
    assert r["error"] is None, r.get("traceback")
    ours = _ours(served, drafters[name], prompts * 3, Sampling(1.0, 1.0, seed=1, draft="greedy"))
    parity = compare(ours["metrics"], r["metrics"], greedy=False)
    assert parity["passed"], parity


def test_our_sampled_acceptance_is_the_theory(served, drafters, prompts):
    """A point-mass draft x is accepted with probability p(x), so the first-draft acceptance rate at T = 1 is
    E[p(argmax q)] over the base's own sampled texts — computed here with no speculative decoder at all (texts
    sampled from the base, the drafter teacher-forced on them). Our decoder's measured rate must equal it within
    4.5 cluster-robust standard errors (parity.rate_variance)."""
    _, base = served
    drafter = load_drafter(drafters["eagle3_full"]).attach_base(base.embed_tokens, base.lm_head).eval()
    eos = {base.tokenizer.eos_token_id}
    many = prompts * 3
    theory = []
    with torch.no_grad():
        for j, p in enumerate(many):
            text = base_decode_batch(base, [p], MAX_NEW, eos, Sampling(1.0, 1.0, seed=1000 + j))[0].tokens
            ids = torch.tensor([text])
            feats, logits = base.forward(ids, feature_layers=drafter.feature_layers)
            probs = logits[0].float().softmax(-1)
            out = drafter(feats[:, :-1], ids[:, 1:], torch.arange(len(text) - 1)[None])
            drafted = drafter.draft_to_target(drafter.logits(out).argmax(-1))[0]  # row t drafts token t+2
            rows = range(len(p) - 1, len(text) - 2)  # roots at the generated tokens
            theory.append({"num_drafts": len(rows), "accepted_per_pos": [sum(float(probs[t + 1, drafted[t]])
                                                                             for t in rows)]})
    expected = {"num_drafts": sum(t["num_drafts"] for t in theory), "per_request": theory,
                "accepted_per_pos": [sum(t["accepted_per_pos"][0] for t in theory)]}
    ours = _ours(served, drafters["eagle3_full"], many, Sampling(1.0, 1.0, seed=1, draft="greedy"))["metrics"]
    measured = {**ours, "accepted_per_pos": ours["accepted_per_pos"][:1],
                "per_request": [{**r, "accepted_per_pos": r["accepted_per_pos"][:1]} for r in ours["per_request"]]}
    rate, want = measured["accepted_per_pos"][0] / measured["num_drafts"], \
        expected["accepted_per_pos"][0] / expected["num_drafts"]
    allowed = 4.5 * (rate_variance(measured, 0) + rate_variance(expected, 0)) ** 0.5
    assert abs(rate - want) <= allowed, (rate, want, allowed)


@pytest.mark.parametrize("name", VLLM_LOAD_ONLY)
def test_vllm_loads_dspark_parameter_for_parameter(served, drafters, name):
    """vLLM's own Qwen3DSparkForCausalLM (built from the engine config `vllm serve` would make) fills every
    parameter from the export with its own load_weights, except those it shares with the target."""
    work, _ = served
    report = check_with_vllm_loader(drafters[name] / "vllm", work / "base")
    assert "error" not in report, f"{report.get('error')}\n{report.get('traceback')}"
    assert report["architecture"] == "Qwen3DSparkModel" and report["problems"] == [], report
    assert report["checked"] >= 15 and report["checked"] + len(report["from_target"]) == report["parameters"], report
    assert all(any(k in n for k in ("embed_tokens", "lm_head", "mask_embedding")) for n in report["from_target"])


def test_sglang_loads_every_export_parameter_for_parameter(served, drafters):
    work, _ = served
    names = [n for n, (_, _, engines) in DRAFTERS.items() if "sglang" in engines]
    reports = check_with_sglang([drafters[n] / "sglang" for n in names], work / "base")
    for name, report in zip(names, reports):
        assert "error" not in report, f"{name}: {report.get('error')}\n{report.get('traceback')}"
        assert report["problems"] == [] and report["checked"] >= 5, (name, report)
        assert report["checked"] + len(report["from_target"]) >= report["parameters"], (name, report)  # + d2t
        shared = ("set_embed", "set_embed_and_head") if name.startswith("eagle") else ("none",)
        assert report.get("shares_tied_target") in shared, (name, report)
        # ... and the export holds the drafter's own weights (SGLang's layout ← our names, checked on our side).
        exported = load_file(str(drafters[name] / "sglang" / "model.safetensors"))
        ours = {k: v for k, v in load_drafter(drafters[name]).state_dict().items() if "rotary_emb" not in k}
        for key, value in ours.items():
            target = "embed_tokens.weight" if key == "embed.weight" else key
            if target in exported:
                assert torch.equal(exported[target], value), (name, key)


def test_sglang_check_catches_a_misnamed_key(served, drafters, tmp_path):
    """The gate has power: a key SGLang's loader does not know is skipped by SGLang itself, and the parameter it
    should have filled is reported (it stays NaN)."""
    import shutil

    work, _ = served
    bad = tmp_path / "bad"
    shutil.copytree(drafters["eagle3_full"] / "sglang", bad)
    weights = load_file(str(bad / "model.safetensors"))
    weights["midlayer.self_attn.query.weight"] = weights.pop("midlayer.self_attn.q_proj.weight")
    save_file(weights, str(bad / "model.safetensors"))
    report = check_with_sglang([bad], work / "base")[0]
    assert any("qkv_proj" in p for p in report["problems"]), report


def test_sglang_check_catches_a_draft_that_ties_its_own_head(served, drafters, tmp_path):
    """A tied target (SmolLM2's layout) hands one tensor as embedding and head; an EAGLE-1/2 draft whose config
    ties its own head makes SGLang's set_embed_and_head fail (AttributeError) — which is why the export unties it."""
    import json
    import shutil

    work, _ = served
    bad = tmp_path / "tied"
    shutil.copytree(drafters["eagle2"] / "sglang", bad)
    cfg = json.loads((bad / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False
    (bad / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": True}))
    report = check_with_sglang([bad], work / "base")[0]
    assert any("set_embed_and_head" in p and "AttributeError" in p for p in report["problems"]), report


def test_engines_that_cannot_capture_a_layer_are_refused(served, drafters, tmp_path):
    """Feature layer 3 of a 4-layer base is the last block's output: vLLM records it, SGLang never captures it
    (it reads block k's output at block k+1's input), so the SGLang export is refused with the rule."""
    work, _ = served
    cfg = make_cfg(tmp_path, str(work / "base"), str(work / "convs.jsonl"), algorithm__name="eagle3",
                   data__mode="online", data__aux_layer_ids=[0, 2, 3], training__max_steps=2,
                   training__save_steps=1000)
    train.run(cfg, [])
    cfg.export.to, cfg.export.out = "sglang", str(tmp_path / "sglang")
    with pytest.raises(ConfigError, match="sglang cannot feed this drafter.*within 0..2"):
        export.run(cfg, [])
    cfg.export.to, cfg.export.out = "vllm", str(tmp_path / "vllm")
    export.run(cfg, [])
    assert json.loads((tmp_path / "vllm" / "config.json").read_text())["eagle_aux_hidden_state_layer_ids"] == [1, 3, 4]


PLUGIN_PROBE = """
import json, os, sys
import torch
from vllm.plugins import load_general_plugins
from vllm.platforms import current_platform
from vllm.utils import cpu_triton_utils as cpu_tl
load_general_plugins()  # what every vLLM process does first, then it registers its CPU kernels
current_platform.register_triton_kernel_overrides()
import vllm.v1.sample.rejection_sampler as rs
got = rs.expand_batch_to_tokens(torch.tensor([0.7]), torch.tensor([3], dtype=torch.int32), 3,
                                replace_from=rs.GREEDY_TEMPERATURE, replace_to=1)
print(json.dumps({"impl": cpu_tl._expand_kernel_impl.__module__, "temperatures": got.tolist()}))
"""


@pytest.mark.parametrize("enabled", ["1", "0"])
def test_the_vllm_plugin_fixes_the_cpu_temperatures_only_when_asked(tmp_path, enabled):
    """vllm_cpu_fix.register as vLLM itself loads it: an entry point in the `vllm.general_plugins` group (as
    pyproject.toml declares it), found by vLLM's own plugin loader. With SPECFORGE_HET_VLLM_CPU_FIX=1 the kernel vLLM
    registers afterwards spreads the temperature exactly; without it vLLM's own kernel stays."""
    import os
    import subprocess
    import tomllib

    root = Path(__file__).resolve().parents[1]
    plugins = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]["vllm.general_plugins"]
    dist = tmp_path / "site" / "specforge_het_plugin_probe-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: specforge-het-plugin-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[vllm.general_plugins]\n" + "".join(
        f"{name} = {target}\n" for name, target in plugins.items()))
    environment = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{root}",
                   "SPECFORGE_HET_VLLM_CPU_FIX": enabled, "VLLM_PLUGINS": ",".join(plugins)}
    done = subprocess.run([str(env.build()), "-c", PLUGIN_PROBE], capture_output=True, text=True, timeout=300,
                          env=environment, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    if enabled == "1":
        assert got["impl"] == "specforge_het.serving.vllm_cpu_fix"
        assert got["temperatures"] == pytest.approx([0.7] * 3)
    else:
        assert got["impl"] == "vllm.utils.cpu_triton_utils"
