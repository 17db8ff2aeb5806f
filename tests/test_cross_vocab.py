"""A draft LM with its own tokenizer (families/classic/cross_vocab.py): the token-level intersection computed as
vLLM's use_heterogeneous_vocab computes it, training on the intersection, and lossless decoding — greedy
token-identical to the base, sampled drafts only where the base can accept them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_cfg
from specforge_het import train
from specforge_het.data.stdlib_corpus import stdlib_files
from specforge_het.demo_base import train_tokenizer
from specforge_het.evaluation import simulated_acceptance, simulated_tau
from specforge_het.families.classic.vocab_map import build_vocab_map, normalised_vocab
from specforge_het.inference.accept import Sampling
from specforge_het.inference.engine import base_decode_batch, speculative_decode_batch
from specforge_het.modeling.base import load_base
from specforge_het.modeling.checkpoint import load_drafter


@pytest.fixture(scope="module")
def other_lm(tmp_path_factory) -> str:
    """A 1-layer Llama (hidden 32) with its own 384-token BPE, trained on other stdlib files than the base's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("other_lm")
    texts = [f.text for f in stdlib_files(max_mb=1.2)][-40:]
    tok = train_tokenizer(texts, vocab_size=384)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                 eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.eos_token_id)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def test_the_intersection_is_the_shared_token_strings(tiny_base, other_lm):
    from transformers import AutoTokenizer

    a, b = AutoTokenizer.from_pretrained(tiny_base), AutoTokenizer.from_pretrained(other_lm)
    vmap = build_vocab_map(a, b, len(a), len(b))
    t2d, d2t = vmap["target_to_draft"], vmap["draft_to_target"]
    shared = set(normalised_vocab(a)) & set(normalised_vocab(b))
    assert 0 < int((d2t >= 0).sum()) == len(shared) < len(b)  # another vocabulary, partly shared
    for d in (d2t >= 0).nonzero()[:, 0].tolist():  # both directions agree, and on the same string
        t = int(d2t[d])
        assert int(t2d[t]) == d and a.convert_ids_to_tokens(t) == b.convert_ids_to_tokens(d)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base, tiny_conversations, other_lm):
    """The other-tokenizer LM as a classic draft of the tiny base: its drafter before training and after."""
    work = tmp_path_factory.mktemp("cross_vocab")
    runs = {}
    for steps in (0, 60):
        cfg = make_cfg(work / str(steps), tiny_base, tiny_conversations, algorithm__name="classic_draft",
                       modeling__draft_model_path=other_lm, data__mode="online", training__max_steps=max(steps, 1),
                       training__learning_rate=3e-3 if steps else 1e-12, training__per_device_train_batch_size=8,
                       training__logging_steps=20, training__save_steps=1000)
        train.run(cfg, [])
        runs[steps] = cfg
    return runs


def test_a_draft_with_its_own_tokenizer_trains_on_the_intersection(trained):
    cfg = trained[60]
    out = Path(cfg.training.output_dir)
    saved = json.loads((out / "drafter_config.json").read_text())
    assert saved["architecture"] == "classic_cross_vocab_drafter" and saved["vocab_intersection"] > 0
    log = [h for h in json.loads((out / "train_log.json").read_text()) if "loss" in h]
    assert log[-1]["loss"] < log[0]["loss"]


def _decode_setup(cfg):
    base = load_base(cfg.base)
    drafter = load_drafter(cfg.training.output_dir).attach_base(base.embed_tokens, base.lm_head).check_base(base)
    convs = [json.loads(line) for line in Path(cfg.data.conversations).read_text().splitlines()][-6:]
    prompts = [base.tokenizer(c["messages"][0]["content"])["input_ids"][-40:] for c in convs]
    return base, drafter.eval(), prompts


@pytest.mark.parametrize("shape", [(4, 1, 4), (3, 3, 8)])  # chain and tree
def test_greedy_decoding_with_it_is_the_base_s_greedy_output(trained, shape):
    base, drafter, prompts = _decode_setup(trained[60])
    eos = {base.tokenizer.eos_token_id}
    want = [r.tokens for r in base_decode_batch(base, prompts, 24, eos)]
    got = speculative_decode_batch(base, drafter, prompts, 24, eos, *shape)
    assert [r.tokens for r in got] == want
    assert sum(sum(r.accepted) for r in got) > 0  # the shared tokens let some drafts through


def test_its_drafts_lie_in_the_intersection_and_training_raises_simulated_tau(trained):
    """q puts no mass on base tokens the draft cannot name (so rejection sampling against the base stays exact),
    and distillation raises the simulated τ over the untrained draft on held-out text."""
    taus = {}
    for steps, cfg in trained.items():
        base, drafter, prompts = _decode_setup(cfg)
        ids = torch.tensor([prompts[0]])
        with torch.no_grad():
            probs = torch.softmax(drafter.logits(drafter.token_states(ids)), -1)
            _, shared = drafter.intersection()
            outside = torch.ones(base.vocab_size, dtype=torch.bool)
            outside[shared] = False
            assert float(probs[..., outside].sum()) == 0.0
            width = min(len(p) for p in prompts)
            batch_ids = torch.tensor([p[-width:] for p in prompts])
            hidden = base.model.model(batch_ids).last_hidden_state
            batch = {"input_ids": batch_ids, "hidden": hidden, "loss_mask": torch.ones_like(batch_ids)}
            taus[steps] = simulated_tau(*simulated_acceptance(drafter, batch, 3))[0]
        out = speculative_decode_batch(base, drafter, prompts[:2], 16, {base.tokenizer.eos_token_id}, 3, 1, 3,
                                       Sampling(temperature=1.0, seed=0))
        assert all(r.new_tokens > 0 for r in out)
    assert taus[60] > taus[0]


def test_string_level_drafting_is_lossless(trained):
    """inference.proposer string: the draft LM continues its own tokenization of the text, the base's tokenizer
    re-encodes what it wrote — greedy output token-identical to the base's, sampled decoding exact (point-mass
    drafts); trees are refused in one line."""
    from specforge_het.config.errors import ConfigError

    base, drafter, prompts = _decode_setup(trained[60])
    saved = Path(trained[60].training.output_dir) / "draft_tokenizer"  # the draft's tokenizer travels with it
    assert (saved / "tokenizer_config.json").is_file() and drafter.tokenizer_folder() == str(saved)
    drafter.use_string_drafting(base.tokenizer)
    eos = {base.tokenizer.eos_token_id}
    want = [r.tokens for r in base_decode_batch(base, prompts, 24, eos)]
    got = speculative_decode_batch(base, drafter, prompts, 24, eos, 4, 1, 4)
    assert [r.tokens for r in got] == want
    assert sum(sum(r.accepted) for r in got) > 0
    out = speculative_decode_batch(base, drafter, prompts[:2], 16, eos, 3, 1, 3, Sampling(temperature=1.0, seed=0))
    assert all(r.new_tokens > 0 for r in out)
    with pytest.raises(ConfigError, match="string-level drafting proposes chains"):
        speculative_decode_batch(base, drafter, prompts[:1], 8, eos, 3, 3, 8)


def test_sequence_level_distillation_trains_the_draft_on_its_own_tokenization(tmp_path, tiny_base, tiny_conversations,
                                                                               other_lm):
    """algorithm.sequence_weight > 0 adds CE on the base's text re-encoded by the draft's tokenizer: every trained
    span keeps its text (re-encoded span by span), and that CE falls while training."""
    from transformers import AutoTokenizer

    from specforge_het.families.classic.train import retokenized

    base_tok, draft_tok = AutoTokenizer.from_pretrained(tiny_base), AutoTokenizer.from_pretrained(other_lm)
    rows = [base_tok(t)["input_ids"] for t in ("def add(a, b):\n    return a + b", "x = [i * i for i in range(9)]")]
    width = max(map(len, rows))
    batch = {"input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
             "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
             "loss_mask": torch.tensor([[0] * 3 + [1] * (len(r) - 3) + [0] * (width - len(r)) for r in rows])}
    ids, mask = retokenized(batch, base_tok, draft_tok)
    for j, r in enumerate(rows):
        kept = [t for t, m in zip(ids[j].tolist(), mask[j].tolist()) if m]
        assert draft_tok.decode(kept) == base_tok.decode(r[3:])
    cfg = make_cfg(tmp_path, tiny_base, tiny_conversations, algorithm__name="classic_draft",
                   modeling__draft_model_path=other_lm, data__mode="online", training__max_steps=40,
                   training__learning_rate=3e-3, training__per_device_train_batch_size=8, training__logging_steps=10,
                   training__save_steps=1000, algorithm__sequence_weight=1.0)
    train.run(cfg, [])
    log = [h for h in json.loads((Path(cfg.training.output_dir) / "train_log.json").read_text()) if "seq_ce" in h]
    assert log and log[-1]["seq_ce"] < log[0]["seq_ce"]
