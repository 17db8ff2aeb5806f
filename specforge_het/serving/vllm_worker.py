"""Runs vLLM itself on a job file, in the serving environment's python (not importable from specforge_het: it needs
only vLLM). Each run builds an offline `vllm.LLM` for the base — with a speculative config or without — decodes the
prompts (token ids) one request at a time, and records the output tokens, wall time and vLLM's own speculative
decoding counters (drafts, draft tokens, accepted tokens, accepted tokens per position).

    <serving-env>/bin/python vllm_worker.py job.json result.json

job.json: {"base": DIR, "dtype": "float32", "max_model_len": 1024, "runs": [{"name": ..., "speculative_config":
{...} or null, "prompts": [[ids]], "max_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": 0,
"patch_engine": false}]}

Each result says whether this engine has the CPU build's temperature defect (cpu_temperature_probe); a run with
"patch_engine" serves with the one kernel it concerns replaced by an exact torch version (vllm_cpu_fix.py, also a vLLM
plugin users can enable), so the rest of the engine (drafter, proposer, rejection sampler) is vLLM's own.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback

from vllm_cpu_fix import use_exact_expand  # a sibling file: this script runs from its own folder

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process: runs are sequential
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the test bases are tiny
os.environ.setdefault("HF_HUB_OFFLINE", "1")

COUNTERS = {"vllm:spec_decode_num_drafts": "num_drafts", "vllm:spec_decode_num_draft_tokens": "num_draft_tokens",
            "vllm:spec_decode_num_accepted_tokens": "num_accepted_tokens"}


def spec_metrics(llm) -> dict:
    out = {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0, "accepted_per_pos": []}
    for m in llm.get_metrics():
        if m.name in COUNTERS:
            out[COUNTERS[m.name]] = int(m.value)
        elif m.name == "vllm:spec_decode_num_accepted_tokens_per_pos":
            out["accepted_per_pos"] = [int(v) for v in m.values]
    return out


def counter_delta(now: dict, before: dict) -> dict:
    out = {k: now[k] - before[k] for k in ("num_drafts", "num_draft_tokens", "num_accepted_tokens")}
    out["accepted_per_pos"] = [a - b for a, b in zip(now["accepted_per_pos"], before["accepted_per_pos"])] \
        if before["accepted_per_pos"] else list(now["accepted_per_pos"])
    return out


CPU_TEMPERATURE_DEFECT = ("vLLM's CPU expand kernel leaves the per-draft-token temperatures uninitialised (it "
                          "writes an int64 copy), so at T > 0 its rejection sampler divides the target logits by "
                          "whatever that memory holds")


def cpu_temperature_probe() -> list[float] | None:
    """vLLM's CPU build (0.32) replaces the Triton kernel that spreads each request's temperature over its draft
    tokens with a C++ one that takes int64 only: its wrapper passes an int64 *copy* of the float output buffer, so the
    buffer the rejection sampler divides the target logits by stays uninitialised memory at T > 0. Measured here, not
    assumed from the version: the temperature 0.7 spread over 3 draft tokens as it came out when this engine has
    the defect (what the memory held: differs from run to run), else None."""
    import torch
    from vllm.platforms import current_platform
    from vllm.triton_utils import HAS_TRITON

    if current_platform.device_type != "cpu" or HAS_TRITON:
        return None
    import vllm.v1.sample.rejection_sampler as rs

    current_platform.register_triton_kernel_overrides()
    got = rs.expand_batch_to_tokens(torch.tensor([0.7]), torch.tensor([3], dtype=torch.int32), 3,
                                    replace_from=rs.GREEDY_TEMPERATURE, replace_to=1)
    if torch.allclose(got, torch.full((3,), 0.7)):
        return None
    return got.tolist()


def one_run(job: dict, run: dict) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    use_exact_expand(False)  # vLLM's own kernel again: an earlier run of this process may have patched it
    probe = cpu_temperature_probe()
    patched = bool(run.get("patch_engine")) and probe is not None
    if probe is not None:
        use_exact_expand(patched)
    t0 = time.perf_counter()
    llm = LLM(model=job["base"], tokenizer=job["base"], dtype=job.get("dtype", "float32"), enforce_eager=True,
              max_model_len=job.get("max_model_len", 1024),
              seed=0 if run.get("seed") is None else run["seed"],  # None: requests draw independently
              speculative_config=run.get("speculative_config"), disable_log_stats=False)
    init_s = time.perf_counter() - t0
    if probe is not None:
        use_exact_expand(patched)
    params = SamplingParams(temperature=run.get("temperature", 0.0), top_p=run.get("top_p", 1.0),
                            max_tokens=run["max_tokens"], seed=run.get("seed", 0),
                            ignore_eos=run.get("ignore_eos", False))
    llm.generate([TokensPrompt(prompt_token_ids=run["prompts"][0])], params, use_tqdm=False)  # warm-up
    warm = before = spec_metrics(llm)
    outputs, seconds, per_request = [], 0.0, []
    for ids in run["prompts"]:  # one request at a time: the latency a single user sees, like our batch-1 decoder
        t1 = time.perf_counter()
        out = llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)
        seconds += time.perf_counter() - t1
        outputs.append(list(out[0].outputs[0].token_ids))
        now = spec_metrics(llm)
        per_request.append(counter_delta(now, before))  # sampled parity needs each request's own counts
        before = now
    metrics = counter_delta(spec_metrics(llm), warm)  # the warm-up request does not count
    metrics["per_request"] = per_request
    del llm
    gc.collect()
    return {"name": run["name"], "outputs": outputs, "seconds": seconds, "init_seconds": init_s,
            "new_tokens": sum(len(o) for o in outputs), "metrics": metrics, "error": None,
            "engine_defect": CPU_TEMPERATURE_DEFECT if probe else None, "patched": patched, "defect_probe": probe}


def main(job_path: str, out_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    results = []
    for run in job["runs"]:
        try:
            results.append(one_run(job, run))
        except Exception as e:  # reported per run: one export that vLLM refuses must not hide the others
            results.append({"name": run["name"], "error": f"{type(e).__name__}: {e}",
                            "traceback": traceback.format_exc()[-4000:]})
        with open(out_path, "w") as f:  # after every run, so a crash keeps what was done
            json.dump({"runs": results}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
