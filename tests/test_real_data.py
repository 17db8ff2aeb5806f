"""Training data without a hub: resumable, fingerprinted self-distillation (truncated answers marked), prompt
synthesis by the base (Magpie-style) with held-out checks, `datasets` sources, and the time budget."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from specforge_het.config.schema import ConfigError, set_key
from specforge_het.data import regenerate as regen_mod
from specforge_het.data.conversations import read_conversations, tokenize_conversation
from specforge_het.data.heldout import HeldOut
from specforge_het.data.regenerate import regenerate_to_file
from specforge_het.data.resumable import ResumableJsonl
from specforge_het.data.synthesize import synthesize, user_header_ids
from specforge_het.modeling.base import load_base

from conftest import make_cfg

CHATML = (Path(__file__).resolve().parents[1] / "specforge_het" / "configs" / "chat_templates" / "chatml.jinja")


@pytest.fixture(scope="module")
def chat_base(tiny_base):
    base = load_base(make_cfg(Path("."), tiny_base).base)
    base.tokenizer.chat_template = CHATML.read_text()
    return base


def test_resumable_jsonl_resumes_and_refuses_other_inputs(tmp_path):
    out = tmp_path / "rows.jsonl"
    job = ResumableJsonl(out, {"a": 1}, "test")
    job.start(0)
    job.append([{"i": 0}, {"i": 1}])
    with open(job.partial, "a") as f:  # a kill in the middle of a line
        f.write('{"i": 2')
    again = ResumableJsonl(out, {"a": 1}, "test")
    assert again.rows() == [{"i": 0}, {"i": 1}] and not again.finished
    again.start(2)
    again.append([{"i": 2}])
    again.finish()
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert ResumableJsonl(out, {"a": 1}, "test").finished
    with pytest.raises(ConfigError, match=r"made from other inputs \(differ: a\)"):
        ResumableJsonl(out, {"a": 2}, "test")
    stray = tmp_path / "stray.jsonl"
    stray.write_text("{}\n")
    with pytest.raises(ConfigError, match="has no stray.jsonl.meta.json"):
        ResumableJsonl(stray, {"a": 1}, "test")


def test_self_distillation_resumes_after_a_kill_and_marks_truncation(chat_base, tmp_path, monkeypatch):
    convs = [[{"role": "user", "content": f"Write about the number {i}."}] for i in range(10)]
    kw = dict(max_new_tokens=6, temperature=0.0, batch_size=1, seed=0)  # chunks of 4 conversations
    whole = regenerate_to_file(chat_base, convs, str(tmp_path / "whole.jsonl"), {"x": 1}, **kw)
    real, calls = regen_mod.regenerate_conversations, []

    def dies_on_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(regen_mod, "regenerate_conversations", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        regenerate_to_file(chat_base, convs, str(tmp_path / "killed.jsonl"), {"x": 1}, **kw)
    assert len((tmp_path / "killed.jsonl.partial").read_text().splitlines()) == 4
    calls.clear()
    monkeypatch.setattr(regen_mod, "regenerate_conversations", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = regenerate_to_file(chat_base, convs, str(tmp_path / "killed.jsonl"), {"x": 1}, **kw)
    assert resumed == whole and len(calls) == 2  # chunks 2 and 3 only
    answers = [c[-1] for c in whole]
    assert all(a["role"] == "assistant" for a in answers)
    cut = [a for a in answers if a.get("truncated")]
    assert cut, "6-token answers from a random base should hit the cap"
    with pytest.raises(ConfigError, match="made from other inputs"):
        regenerate_to_file(chat_base, convs, str(tmp_path / "whole.jsonl"), {"x": 2}, **kw)


def test_truncated_answers_do_not_train_the_end_of_turn(chat_base, tmp_path):
    import copy

    tok = copy.deepcopy(chat_base.tokenizer)  # with ChatML's markers as special tokens, as a real chat model has them
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    msgs = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "an answer cut"}]
    ids, mask = tokenize_conversation(tok, msgs, 512)
    ids_t, mask_t = tokenize_conversation(tok, [msgs[0], {**msgs[1], "truncated": True}], 512)
    assert ids == ids_t and sum(mask) == sum(mask_t) + 1  # the <|im_end|> after the answer leaves the mask
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": [msgs[0], {**msgs[1], "truncated": True}]}) + "\n")
    convs, _ = read_conversations(path)
    assert convs[0][1].get("truncated") is True


def test_synthesis_writes_filtered_prompts_and_resumes(chat_base, tmp_path, monkeypatch):
    header = chat_base.tokenizer.decode(user_header_ids(chat_base.tokenizer))
    assert header.endswith("<|im_start|>user\n")
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(json.dumps({"turns": ["alpha beta gamma delta epsilon zeta eta theta iota", "second turn"]})
                       + "\n")

    def cfg_for(out):
        cfg = make_cfg(tmp_path, "unused")
        for k, v in {"synth.out": str(out), "synth.num_prompts": 6, "synth.max_prompt_tokens": 12,
                     "synth.batch_size": 4, "synth.min_words": 1, "benchmark.mt_bench": str(heldout)}.items():
            set_key(cfg, k, v, "test")
        return cfg

    whole = synthesize(chat_base, cfg_for(tmp_path / "a.jsonl")).rows()
    prompts = [r["prompt"] for r in whole]
    assert len(prompts) == 6 and len({p.lower() for p in prompts}) == 6
    # a kill after the first batch: the rerun continues from it and ends where the uninterrupted run ended
    import specforge_het.data.synthesize as synth_mod

    real, calls = synth_mod.complete_batch, []

    def dies(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(synth_mod, "complete_batch", dies)
    with pytest.raises(KeyboardInterrupt):
        synthesize(chat_base, cfg_for(tmp_path / "b.jsonl"))
    monkeypatch.setattr(synth_mod, "complete_batch", real)
    assert [r["prompt"] for r in synthesize(chat_base, cfg_for(tmp_path / "b.jsonl")).rows()] == prompts


def test_synthesis_openers_start_each_prompt_in_turn_and_change_the_fingerprint(chat_base, tmp_path):
    openers = ["Write a", "Solve", "Pretend you are"]
    cfg = make_cfg(tmp_path, "unused")
    for k, v in {"synth.out": str(tmp_path / "p.jsonl"), "synth.num_prompts": 6, "synth.max_prompt_tokens": 12,
                 "synth.batch_size": 6, "synth.min_words": 1, "synth.openers": openers}.items():
        set_key(cfg, k, v, "test")
    rows = synthesize(chat_base, cfg).rows()
    assert rows and all(any(r["prompt"].startswith(o) for o in openers) for r in rows), rows
    assert {o for o in openers if any(r["prompt"].startswith(o) for r in rows)} == set(openers)  # all three used
    set_key(cfg, "synth.openers", openers[:2], "test")  # other openers: the finished file is refused, not reused
    with pytest.raises(ConfigError, match="p.jsonl"):
        synthesize(chat_base, cfg)
    set_key(cfg, "synth.openers", ["  "], "test")
    set_key(cfg, "synth.out", str(tmp_path / "q.jsonl"), "test")
    with pytest.raises(ConfigError, match="synth.openers"):
        synthesize(chat_base, cfg)


def test_synthesis_drops_held_out_prompts(chat_base, tmp_path, monkeypatch):
    monkeypatch.setattr(HeldOut, "leaks", lambda self, text: True)
    cfg = make_cfg(tmp_path, "unused")
    for k, v in {"synth.out": str(tmp_path / "p.jsonl"), "synth.num_prompts": 2, "synth.max_prompt_tokens": 8,
                 "synth.batch_size": 2, "synth.min_words": 0, "synth.time_budget_s": 1.0}.items():
        set_key(cfg, k, v, "test")
    with pytest.raises(ConfigError, match="overlaps a held-out benchmark prompt"):
        synthesize(chat_base, cfg)


WORDS = st.lists(st.sampled_from([f"w{i}" for i in range(50)]), min_size=8, max_size=30)


@settings(max_examples=60, deadline=None)
@given(held=WORDS, prefix=st.lists(st.sampled_from(["x", "y", "z"]), max_size=5), start=st.integers(0, 22))
def test_heldout_flags_every_shared_8_word_window(tmp_path_factory, held, prefix, start):
    path = tmp_path_factory.mktemp("h") / "q.jsonl"
    path.write_text(json.dumps({"prompt": " ".join(held)}) + "\n")
    check = HeldOut.from_files([str(path)])
    start = min(start, len(held) - 8)
    assert check.leaks(" ".join(prefix + held[start: start + 8] + prefix))
    assert not check.leaks(" ".join(prefix + held[start: start + 7]))  # 7 shared words: not a leak
    assert not check.leaks(" ".join(["v"] * 20))


def test_datasets_sources(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
            for i in range(6)]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "one.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "folder").mkdir()
    ds.to_parquet(str(tmp_path / "folder" / "a.parquet"))
    ds.to_parquet(str(tmp_path / "folder" / "b.parquet"))
    for source, n in (("one.parquet", 6), ("saved", 6), ("folder", 12)):
        convs, report = read_conversations(tmp_path / source)
        assert len(convs) == n and convs[1] == [{"role": "user", "content": "q1"},
                                                {"role": "assistant", "content": "a1"}], source
    assert len(read_conversations(tmp_path / "folder", limit=4)[0]) == 4
    with pytest.raises(ConfigError, match="does not exist"):  # a missing local file is never taken for a hub id
        read_conversations("missing_dir/convs.jsonl")


def test_time_budget_stops_training():
    import time

    from transformers import TrainerControl, TrainerState

    from specforge_het.train import TimeBudget

    for seconds, stops in ((3600.0, False), (0.01, True)):
        cb, state, control = TimeBudget(seconds), TrainerState(), TrainerControl()
        cb.on_train_begin(None, state, control)
        time.sleep(0.02)
        cb.on_step_end(None, state, control)
        assert control.should_training_stop is stops


def test_benchmark_selection_spreads_and_leaves_out_training_questions(tmp_path):
    from specforge_het.inference.benchmark import Task, select

    turns = [[f"question number {i} about topic {i} with enough words to count here"] for i in range(10)]
    task = Task("mt_bench", "q.jsonl", "chat", turns)
    assert select(task, 3, "first", None).turns == turns[:3]
    assert select(task, 3, "spread", None).turns == [turns[0], turns[3], turns[6]]
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"prompt": turns[3][0]}) + "\n")
    kept = select(task, 10, "first", HeldOut.from_files([str(train)])).turns
    assert turns[3] not in kept and len(kept) == 9
