"""Training at scale on CPU: a run killed with SIGKILL (even mid-save) and restarted with the same command ends
with exactly the drafter of an uninterrupted run; two processes under `accelerate launch` (gloo) train one
drafter; the progress bar reports tokens/s; mixed precision is refused on CPU with a clear error."""
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from specforge_het import data_gen
from specforge_het.config import ConfigError
from specforge_het.config.cli import save_resolved_config
from specforge_het.config.schema import AlgorithmSection, BaseSection
from specforge_het.data.shards import HiddenStateDataset
from specforge_het.modeling.base import load_base
from specforge_het.train import deepspeed_flags, precision_flags, reporters

from conftest import make_cfg

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved_config(tmp_path_factory, tiny_base, tiny_conversations):
    """A data_gen dataset and a resolved training config for it (40 steps, a checkpoint every 4)."""
    work = tmp_path_factory.mktemp("training")
    cfg = make_cfg(work, tiny_base, tiny_conversations)
    data_gen.run(cfg, [])
    t = cfg.training
    t.max_steps, t.save_steps, t.logging_steps, t.learning_rate = 40, 4, 4, 3e-3
    t.per_device_train_batch_size, t.save_total_limit, t.warmup_steps = 4, 3, 2
    return save_resolved_config(cfg, work / "config", "train", [])


def train_cmd(config: Path, out: Path, launcher=(sys.executable, "-m")) -> list[str]:
    return [*launcher, "specforge_het.train", "--use_saved_json_config", str(config),
            "--training.output_dir", str(out)]


def env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def weights(out: Path) -> dict:
    return load_file(str(out / "model.safetensors"))


def test_killed_run_resumes_to_the_same_drafter(saved_config, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(train_cmd(saved_config, full), env=env(), check=True, capture_output=True, cwd=ROOT)

    proc = subprocess.Popen(train_cmd(saved_config, killed), env=env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint-12" / "trainer_state.json").is_file():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = weights(killed / "checkpoint-12")
    assert not (killed / "model.safetensors").is_file()
    # What a kill during a save leaves behind: a checkpoint folder without its trainer state.
    (killed / "checkpoint-16").mkdir(exist_ok=True)
    (killed / "checkpoint-16" / "model.safetensors").write_bytes(b"partial")
    (killed / "checkpoint-16" / "trainer_state.json").unlink(missing_ok=True)

    again = subprocess.run(train_cmd(saved_config, killed), env=env(), capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "incomplete" in again.stdout and "resuming from" in again.stdout
    a, b = weights(full), weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    first = next(iter(a))
    assert not torch.equal(at_kill[first], a[first])  # training went on after the kill


def test_two_process_accelerate_run(saved_config, tmp_path):
    out = tmp_path / "ddp"
    # accelerate's multi-process launcher (torch.distributed); with no GPU the Trainer joins a gloo group.
    # (`--cpu` would force accelerate's single-process launcher.)
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m")
    cmd = train_cmd(saved_config, out, launcher) + ["--training.max_steps", "8", "--training.save_steps", "4"]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((out / "train_log.json").read_text())
    assert any("tokens_per_s" in row for row in log)
    assert json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())["global_step"] == 8
    w = weights(out)
    assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())
    # Two ranks each took 4 samples per step: 8 steps covered 8 · 4 · 2 samples of the dataset.
    cfg = json.loads(saved_config.read_text())["config"]
    n = len(HiddenStateDataset(cfg["data"]["dataset_dir"]))
    assert log[-1]["epoch"] == pytest.approx(8 * 4 * 2 / n, rel=0.02)


def test_mixed_precision_flags():
    assert precision_flags("auto", use_cpu=True) == {"bf16": False, "fp16": False}
    assert precision_flags("no", use_cpu=False) == {"bf16": False, "fp16": False}
    assert precision_flags("bf16", use_cpu=True) == {"bf16": True, "fp16": False}  # CPU bf16 autocast, when asked
    assert precision_flags("probe", use_cpu=True) in ({"bf16": True, "fp16": False}, {"bf16": False, "fp16": False})
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        precision_flags("fp16", use_cpu=True)
    with pytest.raises(ConfigError, match="expected auto, no, bf16, fp16 or probe"):
        precision_flags("fp8", use_cpu=False)


def test_logger_and_deepspeed_settings_are_checked():
    assert reporters("none") == ["none"] and reporters("json") == ["none"]
    with pytest.raises(ConfigError, match="unknown logger 'wandbb'"):
        reporters("tensorboard,wandbb")
    with pytest.raises(ConfigError, match="stage: expected 0, 1, 2 or 3"):
        deepspeed_flags({"zero_optimization": {"stage": 4}}, use_cpu=True, hidden_size=64)
    flags = deepspeed_flags({"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto"}}, True, hidden_size=64)
    assert flags["deepspeed"]["zero_optimization"]["reduce_bucket_size"] == 64 * 64


def zero_launcher(n: int = 2):
    return (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m")


def two_process_run(saved_config, out: Path, *extra: str) -> str:
    cmd = train_cmd(saved_config, out, zero_launcher()) + ["--training.max_steps", "6", "--training.save_steps", "3"]
    proc = subprocess.run(cmd + list(extra), env=env(), capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def ddp_drafter(saved_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    two_process_run(saved_config, out)
    return out


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed")
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_saves_the_trained_drafter(saved_config, ddp_drafter, tmp_path, stage):
    """ZeRO-2/3 over two CPU processes (DeepSpeed's CPU accelerator, gloo): the saved drafter is the full trained
    one (ZeRO-3 gathers the shards on save), equal to what plain data parallel trains from the same seed."""
    zero, ddp = tmp_path / f"zero{stage}", ddp_drafter
    stdout = two_process_run(saved_config, zero, f"--@zero{stage}")
    assert f"DeepSpeed ZeRO-{stage} over 2 processes" in stdout
    resolved = json.loads((zero / "resolved_config.json").read_text())["config"]
    assert resolved["training"]["deepspeed"]["zero_optimization"]["stage"] == stage
    a, b = weights(zero), weights(ddp)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and a[k].numel() > 0, k
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{k}: ZeRO-{stage} ≠ data parallel")
    # The mid-run checkpoint is a full drafter too (gathered, not a shard), and training went on after it.
    mid = weights(zero / "checkpoint-3")
    assert all(mid[k].shape == a[k].shape for k in a)
    assert any(not torch.equal(mid[k], a[k]) for k in a)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_logging(saved_config, tmp_path):
    """--training.report_to wandb with WANDB_MODE=offline: a local run with our metrics, no network."""
    out, wandb_dir = tmp_path / "run", tmp_path / "wandb"
    wandb_dir.mkdir()
    cmd = train_cmd(saved_config, out) + ["--training.max_steps", "4", "--training.report_to", "wandb"]
    proc = subprocess.run(cmd, env={**env(), "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir),
                                    "WANDB_PROJECT": "specforge_het_test"},
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = list((wandb_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(wandb_dir.rglob("*"))[:20]
    # The offline run log (protobuf records, synced later with `wandb sync`) holds our metrics' history.
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"train/loss", b"train/acc", b"train/vloss", b"train/tokens_per_s"):
        assert records.count(key) >= 2, key  # logged at step 1 and step 4


def short_run(saved_config, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = train_cmd(saved_config, out) + ["--training.max_steps", "8", "--training.save_steps", "4", *extra]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def two_checkpoints(saved_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpts") / "run"
    proc = short_run(saved_config, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "checkpoint-4").is_dir() and (out / "checkpoint-8").is_dir()
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_trainer_state_falls_back_to_the_previous_checkpoint(saved_config, two_checkpoints, tmp_path):
    out = copy_run(two_checkpoints, tmp_path / "run")
    state = out / "checkpoint-8" / "trainer_state.json"
    state.write_text(state.read_text()[:40])  # a crash while it was written
    proc = short_run(saved_config, out, "--training.max_steps", "12")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "checkpoint-8 is incomplete or damaged" in proc.stdout and "resuming from" in proc.stdout
    assert "checkpoint-4" in proc.stdout.split("resuming from", 1)[1].splitlines()[0]
    assert json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())["global_step"] == 12


def test_resume_refuses_a_checkpoint_of_another_drafter(saved_config, two_checkpoints, tmp_path):
    out = copy_run(two_checkpoints, tmp_path / "run")
    proc = short_run(saved_config, out, "--modeling.draft_layers", "2")
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert "was made with another drafter config (draft_config differ)" in err[-1]


def test_a_pickle_weights_only_refuses_is_one_line(saved_config, two_checkpoints, tmp_path):
    import pickle

    out = copy_run(two_checkpoints, tmp_path / "run")
    (out / "checkpoint-8" / "rng_state.pth").write_bytes(pickle.dumps(os.system))  # code, not tensors
    proc = short_run(saved_config, out, "--training.max_steps", "12")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "rng_state.pth: refused — not a weights-only torch file" in last and "Traceback" not in proc.stderr


def test_eval_metrics_cover_every_process_shard(saved_config, tmp_path):
    """Two processes each evaluate half of the held-out split; the logged metrics are over both halves."""
    from specforge_het.algorithms import get_loss
    from specforge_het.evaluation import evaluate_drafter
    from specforge_het.modeling.drafter_base import load_drafter
    from specforge_het.train import split_eval

    out = tmp_path / "ddp_eval"
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m")
    cmd = train_cmd(saved_config, out, launcher) + ["--training.max_steps", "4", "--training.save_steps", "4",
                                                    "--training.eval_fraction", "0.17", "--training.eval_steps", "4"]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = json.loads((out / "eval.json").read_text())[-1]
    cfg = json.loads(saved_config.read_text())["config"]
    _, held_out = split_eval(HiddenStateDataset(cfg["data"]["dataset_dir"]), 0.17)
    assert len(held_out) == 8  # two ranks × one batch of 4: no padding repeats
    base = load_base(BaseSection(model_name_or_path=cfg["base"]["model_name_or_path"]))
    drafter = load_drafter(out).attach_base(base.embed_tokens, base.lm_head)
    from torch.utils.data import DataLoader

    from specforge_het.data.shards import collate

    alone = evaluate_drafter(drafter, DataLoader(held_out, batch_size=4, collate_fn=collate), get_loss("eagle2"),
                             AlgorithmSection(), cfg["training"]["eval_depth"])
    assert logged["eval_positions"] == alone["eval_positions"]  # rank 0's shard alone would hold about half
    assert logged["eval_tau_sim"] == pytest.approx(alone["eval_tau_sim"], rel=1e-5)


def test_packed_training_run(saved_config, tmp_path):
    """data.packing end to end: conversations packed into fewer rows, every logged step with real tokens/s."""
    out = tmp_path / "packed"
    proc = short_run(saved_config, out, "--data.packing", "true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "packing:" in proc.stdout + proc.stderr
    logged = [h for h in json.loads((out / "train_log.json").read_text()) if "loss" in h]
    assert logged and all(h["real_tokens_per_s"] > 0 and math.isfinite(h["loss"]) for h in logged)
    assert json.loads((out / "resolved_config.json").read_text())["config"]["data"]["packing"] is True


def test_fsdp2_saves_the_trained_drafter_and_resumes(saved_config, ddp_drafter, tmp_path):
    """FSDP2 (torch fully_shard through accelerate; on CPU processes over gloo) shards the drafter: the saved drafter
    is the full trained one, equal to plain data parallel from the same seed, and a run resumed from its mid-run
    checkpoint (each process loading its shard of it) ends where the uninterrupted run did."""
    full = tmp_path / "fsdp"
    stdout = two_process_run(saved_config, full, "--@fsdp")
    assert "FSDP2 over 2 processes" in stdout
    a, b = weights(full), weights(ddp_drafter)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{k}: FSDP2 ≠ data parallel")
    mid = weights(full / "checkpoint-3")
    assert all(mid[k].shape == a[k].shape for k in a) and any(not torch.equal(mid[k], a[k]) for k in a)
    resumed = copy_run(full, tmp_path / "resumed")
    for leftover in ("checkpoint-6", "model.safetensors", "drafter_config.json"):
        path = resumed / leftover
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    assert "resuming from" in two_process_run(saved_config, resumed, "--@fsdp")
    c = weights(resumed)
    for k in a:
        torch.testing.assert_close(c[k], a[k], rtol=1e-5, atol=1e-6, msg=f"{k}: resumed FSDP2 run ≠ uninterrupted")


def test_fsdp_settings_are_checked():
    from specforge_het.trainer_flags import fsdp_flags

    with pytest.raises(ConfigError, match="training.fsdp.wrap: expected layers or none"):
        fsdp_flags({"wrap": "blocks"}, None, ["LlamaDecoderLayer"])
    with pytest.raises(ConfigError, match="training.fsdp.reshard: unknown key"):
        fsdp_flags({"reshard": True}, None, [])
    with pytest.raises(ConfigError, match="both set"):
        fsdp_flags({"wrap": "none"}, {"zero_optimization": {"stage": 2}}, [])
    assert fsdp_flags({"wrap": "none"}, None, ["X"])["fsdp_config"]["auto_wrap_policy"] == "NO_WRAP"
    flags = fsdp_flags({}, None, ["LlamaDecoderLayer"])["fsdp_config"]
    assert flags["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"] and flags["version"] == 2


@pytest.fixture(scope="module")
def eagle3_config(tmp_path_factory, tiny_base, tiny_conversations):
    """An EAGLE-3 dataset (the base's fused feature layers) and a resolved training config for it (TTT 3)."""
    work = tmp_path_factory.mktemp("eagle3_training")
    cfg = make_cfg(work, tiny_base, tiny_conversations, algorithm__name="eagle3", modeling__lm_head="own",
                   algorithm__ttt_length=3, training__max_steps=6, training__save_steps=3, training__logging_steps=2,
                   training__learning_rate=3e-3, training__per_device_train_batch_size=4, training__warmup_steps=1)
    data_gen.run(cfg, [])
    return save_resolved_config(cfg, work / "config", "train", [])


def test_sequence_parallel_run_trains_the_one_process_drafter(eagle3_config, tmp_path):
    """training.sequence_parallel 2 over 2 processes (gloo): both read the same batches and each trains half of every
    sequence's rows, so the run consumes the data of one process and saves its drafter (same seed)."""
    single, split = tmp_path / "single", tmp_path / "sp"
    proc = subprocess.run(train_cmd(eagle3_config, single), env=env(), capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = train_cmd(eagle3_config, split, zero_launcher()) + ["--training.sequence_parallel", "2"]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-3000:]
    assert "1 group(s) of 2 processes" in proc.stdout
    a, b = weights(split), weights(single)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{k}: sequence parallel ≠ one process")
    logs = [[h for h in json.loads((out / "train_log.json").read_text()) if "loss" in h] for out in (split, single)]
    assert [h["loss"] for h in logs[0]] == pytest.approx([h["loss"] for h in logs[1]], rel=1e-4)
    assert json.loads((split / "resolved_config.json").read_text())["config"]["training"]["sequence_parallel"] == 2


def test_sequence_parallel_inside_data_parallel(eagle3_config, tmp_path):
    """4 processes, groups of 2: each group reads the shard plain data parallel over 2 processes reads, so the run
    trains that run's drafter."""
    ddp, split = tmp_path / "ddp", tmp_path / "sp"
    for out, launcher, extra in ((ddp, zero_launcher(2), []),
                                 (split, zero_launcher(4), ["--training.sequence_parallel", "2"])):
        proc = subprocess.run(train_cmd(eagle3_config, out, launcher) + extra, env=env(), capture_output=True,
                              text=True, cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-3000:]
    assert "2 group(s) of 2 processes" in proc.stdout
    a, b = weights(split), weights(ddp)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{k}: 2 × 2 sequence parallel ≠ 2-way DDP")


def test_sequence_parallel_misuse_is_one_line(eagle3_config, saved_config, tmp_path):
    for config, extra, message in (
            (eagle3_config, [], "training.sequence_parallel: 2 does not divide the 1 processes launched"),
            (saved_config, [], "training.sequence_parallel: not supported by the eagle2 algorithm"),
            (eagle3_config, ["--training.sequence_parallel", "0"], "training.sequence_parallel")):
        cmd = train_cmd(config, tmp_path / "out") + (extra or ["--training.sequence_parallel", "2"])
        proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode != 0 and message in proc.stderr + proc.stdout, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("system", ["specforge_het", "specforge"])
def test_peer_benchmark_arms_train_and_score(eagle3_config, system):
    """bench.peer_train's arms on the tiny EAGLE-3 dataset: both train on the same batches and score each draft
    position (the SpecForge arm only where SpecForge is installed; the bench installs nothing)."""
    from specforge_het.bench.peer_train import run_arm

    if system == "specforge":
        pytest.importorskip("specforge", reason="SpecForge is not installed here (bench.peer_train's peer arm)")
    row = run_arm(system, ["--use_saved_json_config", str(eagle3_config)], steps=4, eval_batches=2)
    assert row["system"] == system and len(row["acc"]) == 3 and all(0 <= a <= 1 for a in row["acc"])
    assert row["tokens_per_s"] > 0 and row["peak_mib"] > 0 and math.isfinite(row["loss_last"])
