"""bench.families: the families table is assembled from the reports each run wrote — every cell comes from its
report, a missing report leaves dashes, and the source runs' provenance is listed."""
import json

import pytest
import torch
from safetensors.torch import save_file

from specforge_het.bench import families

SOURCE = {"command": "python -m specforge_het.inference.benchmark --@x", "commit": "abc1234567890", "dirty": False,
          "date": "2026-12-06 20:00 UTC", "cpu": "Test CPU", "cores": 2, "cpu_capability": "AVX512",
          "cpu_flags": ["amx_bf16"], "gpu": None, "torch": "2.13.0+cpu"}


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def trained_drafter(root, name: str, family: str, tau_sim: float):
    d = root / name
    d.mkdir()
    save_file({"fc.weight": torch.zeros(3, 4), "d2t": torch.zeros(5, dtype=torch.long)}, str(d / "model.safetensors"))
    write(d / "drafter_config.json", {"algorithm": family})
    write(d / "train_log.json", [{"step": 10, "loss": 3.0},
                                 {"train_runtime": 1500.0, "step": 400, "epoch": 2.5}])
    write(d / "eval.json", [{"step": 200, "eval_tau_sim": 1.5}, {"step": 400, "eval_tau_sim": tau_sim}])
    return d


def benchmark_row(task, strategy, tau, speedup):
    return {"task": task, "strategy": strategy, "depth": 4, "top_k": 4 if strategy == "tree" else 1,
            "total_tokens": 12 if strategy == "tree" else 4, "tau": tau, "speedup": speedup, "tokens_per_s": 40.0,
            "base_tokens_per_s": 40.0 / speedup, "iteration_over_base_step": tau / speedup, "identical": 7,
            "near_ties": 3, "mismatches": 0, "turns": 10}


def test_table_cells_come_from_each_runs_reports(tmp_path):
    a = trained_drafter(tmp_path, "a", "dflash", 1.93)
    b = trained_drafter(tmp_path, "b", "eagle2", 1.71)
    write(a / "benchmark_bf16" / "benchmark.json",
          {"provenance": SOURCE, "dtype": "bfloat16",
           "rows": [benchmark_row("mt_bench", "chain", 1.61, 1.08), benchmark_row("mt_bench", "tree", 2.02, 1.24)]})
    serving = {"provenance": {**SOURCE, "command": "python -m specforge_het.bench.serving"}, "dtype": "float32",
               "rows": [{"drafter": str(a), "depth": 7, "temperature": 0, "tau_vllm": 1.55, "tau_ours": 1.55,
                         "parity": True, "vllm_identical": 10, "ours_identical": 10, "vllm_base_tok_s": 40.0,
                         "vllm_spec_tok_s": 46.0},
                        {"drafter": str(b), "temperature": 0, "tau_vllm": 9.0}]}  # another drafter's row
    write(a / "serving" / "serving.json", serving)
    out = tmp_path / "table"
    argv = ["--bench.drafters", f"{a},{b}", "--bench.benchmark", "rerun,benchmark_bf16", "--bench.out", str(out)]
    families.main(argv)
    text = out.with_suffix(".md").read_text()
    saved = json.loads(out.with_suffix(".json").read_text())
    assert "| dflash | `" in text and "| 0.0M | 25 min | 400 (2.5) | 1.93 |" in text  # 12 weights; d2t not counted
    assert "| eagle2 | `" in text and "| 1.71 |" in text
    assert ("| dflash | mt_bench | tree (d4, k4, n12) | bfloat16 | 2.02 | 32.3 → 40.0 | 1.24× | 1.63 | "
            "7/10 (+3 near-ties) |") in text
    assert "| dflash | 7 | 0 | float32 | 1.55 | 1.55 | yes | 10 / 10 | 40 → 46 (1.15×) |" in text
    assert "9.00" not in text  # b has no serving report of its own: the other folder's rows are not its
    assert [r["family"] for r in saved["decoder"]] == ["dflash", "dflash"] and len(saved["serving"]) == 1
    assert text.count("Produced by") == 3 and "commit abc1234567" in text  # this table + its two source runs
    assert saved["training"][1]["params"] == 12

    write(a / "rerun" / "benchmark.json", {"provenance": SOURCE, "dtype": "bfloat16",
                                           "rows": [benchmark_row("mt_bench", "chain", 1.77, 1.31)]})
    families.main(argv)
    text = out.with_suffix(".md").read_text()
    assert "| 1.77 |" in text and "2.02" not in text  # the first subfolder that holds a report wins


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no such folder .*nope"):
        families.main(["--bench.drafters", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="expected drafter folders"):
        families.main([])


def test_serving_table_names_patched_rows_and_the_engine_defect():
    base = {"family": "eagle2", "depth": 3, "dtype": "float32", "tau_vllm": 1.3, "tau_ours": 1.3, "vllm_identical": 5,
            "ours_identical": 5, "vllm_base_tok_s": 30.0, "vllm_spec_tok_s": 33.0, "engine_defect": "expand kernel"}
    rows = [{**base, "temperature": 0, "parity": True, "patched": False},
            {**base, "temperature": 0.7, "parity": False, "patched": False},
            {**base, "temperature": 0.7, "parity": True, "patched": True}]
    lines = families.serving_table(rows).splitlines()[2:]
    assert "| 0 |" in lines[0] and "defect" not in lines[0]  # greedy never reads the broken buffer
    assert "**no** (engine defect)" in lines[1]
    assert "0.7 (patched vLLM)" in lines[2] and "| yes |" in lines[2]
