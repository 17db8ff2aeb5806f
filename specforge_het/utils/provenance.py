"""Where a published number came from: the command line, the commit, the date, the machine and its CPU class (and
the GPU when there is one). Every results table the project writes carries this beside it."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The bf16-relevant CPU features (what decides whether bf16 pays here)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))


def provenance(entry: str | None = None) -> dict:
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    from .. import __version__

    return {
        "command": " ".join([f"python -m specforge_het.{entry}" if entry else Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit, "dirty": dirty, "version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_flags": cpu_flags(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "python": platform.python_version(),
    }


def provenance_line(p: dict) -> str:
    commit = (p.get("commit") or "unknown")[:10] + (" (uncommitted changes)" if p.get("dirty") else "")
    gpu = f", GPU {p['gpu']}" if p.get("gpu") else ", no GPU"
    flags = f" [{', '.join(p['cpu_flags'])}]" if p.get("cpu_flags") else ""
    return (f"Produced by `{p['command']}` at commit {commit} on {p['date']}; {p['cpu']}, {p['cores']} cores, CPU "
            f"capability {p['cpu_capability']}{flags}{gpu}; torch {p['torch']}.")
