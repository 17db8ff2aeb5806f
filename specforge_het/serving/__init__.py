"""The real engines in the loop: vLLM's CPU build serves our exports and SGLang's own draft classes load them, in a
separate environment (env.py) driven through subprocesses (vllm_worker.py, sglang_worker.py run there). What comes
back is compared with our reference decoder (parity.py); bench/serving.py prints the table.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from . import env

HERE = Path(__file__).resolve().parent


def _run_worker(script: str, args: list[str], timeout: float) -> None:
    python = env.build()  # reused when complete; built (minutes) the first time on a machine
    cmd = [str(python), str(HERE / script), *args]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    environment.pop("PYTHONPATH", None)  # the worker sees the serving environment only
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=environment,
                          cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise RuntimeError(f"{script} exited {done.returncode}:\n{done.stderr[-4000:]}")


def _local(path: str) -> str:
    """A local folder as an absolute path: the worker runs elsewhere, and vLLM reads a relative name as a hub id."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def run_vllm(job: dict, timeout: float = 1800) -> list[dict]:
    """Run the job's engine configurations with vLLM (see vllm_worker.py) → one result per run, in order."""
    job = {**job, "base": _local(job["base"]), "runs": [
        {**r, "speculative_config": r.get("speculative_config") and {
            **r["speculative_config"], "model": _local(r["speculative_config"]["model"])}} for r in job["runs"]]}
    with tempfile.TemporaryDirectory() as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        _run_worker("vllm_worker.py", [str(job_path), str(out_path)], timeout)
        return json.loads(out_path.read_text())["runs"]


def check_with_vllm_loader(export_dir: str | Path, base_path: str | Path, timeout: float = 600) -> dict:
    """vLLM's own draft class (the one `vllm serve` would build) loads a speculators export with its own
    load_weights → a parameter-by-parameter report (vllm_load_worker.py): for DSpark, which vLLM's CPU build cannot
    serve (its V2 runner needs Triton)."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "report.json"
        _run_worker("vllm_load_worker.py", [str(Path(base_path).resolve()), str(out_path),
                                            str(Path(export_dir).resolve())], timeout)
        return json.loads(out_path.read_text())


def check_with_sglang(export_dirs: list[str | Path], base_path: str | Path, timeout: float = 600) -> list[dict]:
    """SGLang's own draft classes load each export with their own load_weights → a parameter-by-parameter report
    per export (in order): parameters checked, problems, those SGLang takes from the target, or an error."""
    dirs = [str(Path(d).resolve()) for d in export_dirs]
    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "report.json"
        _run_worker("sglang_worker.py", [str(Path(base_path).resolve()), str(out_path), *dirs], timeout)
        reports = json.loads(out_path.read_text())
        return [reports[d] for d in dirs]
