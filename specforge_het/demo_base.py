"""Build the embedded demo base: a small Llama that writes Python, trained on CPython's stdlib.

    python -m specforge_het.demo_base [--demo.train_steps N] [--demo.output_dir DIR]

Steps (each skipped when its output already exists, so the base is built once and reused):
  1. byte-level BPE tokenizer (`tokenizers`) over the stdlib sources;
  2. a Llama-architecture causal LM (~5M parameters) trained for `demo.train_steps` steps on 2 CPU cores;
  3. demo conversations: user = a documented function's signature + docstring from the stdlib,
     assistant = the base model's own sampled continuation (self-distillation), as `messages` JSONL;
     held-out files give a separate evaluation prompt file.
"""
from __future__ import annotations

import logging
import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .config.cli import run_entry, save_resolved_config
from .config.schema import RunConfig
from .config.schema import DemoSection
from .data.regenerate import regenerate_conversations
from .data.stdlib_corpus import function_heads, stdlib_files
from .modeling.base import FrozenBase
from .utils.precision import bf16_pays
from .utils.io import atomic_write_dir, atomic_write_text

EOS = "<|endoftext|>"

log = logging.getLogger(__name__)
# User turn then assistant turn, concatenated with no markers: the base is a plain code LM and the
# "conversation" is prompt → continuation. `{% generation %}` marks the assistant span for HF's mask.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{{ eos_token }}"
    "{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
)


def eval_prompts_path(demo: DemoSection) -> Path:
    return Path(demo.conversations_out).with_name("eval_prompts.jsonl")


def base_is_built(out_dir: Path) -> bool:
    return all((out_dir / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json"))


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1 << 30
    return fast


def bf16_autocast_pays(hidden: int, inner: int) -> bool:
    """Whether bf16 autocast beats fp32 on this machine for the demo's matmul shape (utils/precision.py)."""
    return bf16_pays(hidden, inner, "demo base: bf16 autocast")


def train_base(demo: DemoSection, tokenizer, texts: list[str]):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(demo.seed)
    ids = []
    for enc in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend(enc + [tokenizer.eos_token_id])
    stream = torch.tensor(ids, dtype=torch.long)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=demo.hidden_size, intermediate_size=demo.intermediate_size,
        num_hidden_layers=demo.num_hidden_layers, num_attention_heads=demo.num_attention_heads,
        num_key_value_heads=demo.num_key_value_heads, max_position_embeddings=4 * demo.seq_len,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False, rope_theta=10000.0,
    )
    model = LlamaForCausalLM(config)
    use_bf16 = demo.bf16_autocast
    if use_bf16 is None:
        use_bf16 = bf16_autocast_pays(demo.hidden_size, demo.intermediate_size)
    opt = torch.optim.AdamW(model.parameters(), lr=demo.learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, demo.train_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, demo.train_steps)
                                                                         / demo.train_steps)))
    gen = torch.Generator().manual_seed(demo.seed)
    n_params = sum(p.numel() for p in model.parameters())
    model.train()
    bar = tqdm(range(demo.train_steps),
               desc=f"demo base ({n_params / 1e6:.1f}M params, {len(stream) / 1e6:.1f}M tokens)")
    for _ in bar:
        starts = torch.randint(0, len(stream) - demo.seq_len - 1, (demo.batch_size,), generator=gen)
        batch = torch.stack([stream[s: s + demo.seq_len] for s in starts.tolist()])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def bench_questions_dir(demo: DemoSection) -> Path:
    return Path(demo.conversations_out).with_name("bench")


def write_question_files(out: Path, heads: list[str], seed: int, n: int = 80) -> None:
    """Benchmark question files in the three public formats, from held-out stdlib functions (the base never
    trained on them): MT-bench (two user turns: a function, then another from elsewhere), HumanEval (a
    signature + docstring to complete) and GSM8K (generated arithmetic word problems: out of the base's domain,
    which is the point of a third task)."""
    if all((out / f"{k}.jsonl").is_file() for k in ("mt_bench", "humaneval", "gsm8k")):
        return
    rng = random.Random(seed)
    write_jsonl(out / "humaneval.jsonl", [{"task_id": f"stdlib/{i}", "prompt": h} for i, h in enumerate(heads[:n])])
    write_jsonl(out / "mt_bench.jsonl", [
        {"question_id": 81 + i, "category": "coding", "turns": [heads[n + 2 * i], heads[n + 2 * i + 1]]}
        for i in range(min(n, (len(heads) - n) // 2))])
    names, things = ["Ada", "Guido", "Grace", "Linus", "Barbara"], ["apples", "books", "coins", "pencils", "stamps"]
    rows = []
    for _ in range(n):
        a, b, c = rng.randint(2, 12), rng.randint(2, 9), rng.randint(1, 10)
        who, what = rng.choice(names), rng.choice(things)
        rows.append({"question": f"A box holds {a} {what}. {who} buys {b} boxes and gives away {c} {what}. "
                                 f"How many {what} does {who} have left?",
                     "answer": f"{who} has {a} * {b} = {a * b} {what}, then {a * b} - {c} = {a * b - c}.\n"
                               f"#### {a * b - c}"})
    write_jsonl(out / "gsm8k.jsonl", rows)
    log.info(f"demo benchmark questions → {out}/{{mt_bench,humaneval,gsm8k}}.jsonl")


def build(cfg: RunConfig) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    demo = cfg.demo
    out_dir = Path(demo.output_dir)
    files = stdlib_files(demo.max_corpus_mb)
    train_files = [f for f in files if not f.held_out]
    if base_is_built(out_dir):
        log.info(f"demo base: reusing {out_dir}")
        tokenizer = AutoTokenizer.from_pretrained(out_dir)
        model = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    else:
        t0 = time.time()
        mb = sum(len(f.text) for f in train_files) / 1e6
        log.info(f"demo base: {len(train_files)} stdlib files ({mb:.1f} MB) → {out_dir}")
        tokenizer = train_tokenizer([f.text for f in train_files], demo.vocab_size)
        model = train_base(demo, tokenizer, [f.text for f in train_files])

        def write(tmp: Path) -> None:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            save_resolved_config(cfg, tmp, "demo_base", [])

        atomic_write_dir(out_dir, write)  # the folder appears complete or not at all
        log.info(f"demo base: built in {time.time() - t0:.0f}s")

    conv_path = Path(demo.conversations_out)
    eval_heads = [h for f in files if f.held_out for h in function_heads(f)]
    bench_heads = list(eval_heads)
    random.Random(demo.seed + 1).shuffle(bench_heads)
    write_question_files(bench_questions_dir(demo), bench_heads, demo.seed)
    if conv_path.is_file() and eval_prompts_path(demo).is_file():
        log.info(f"demo conversations: reusing {conv_path}")
        return out_dir
    rng = random.Random(demo.seed)
    train_heads = [h for f in train_files for h in function_heads(f)]
    rng.shuffle(train_heads)
    train_heads = train_heads[: demo.num_conversations]
    rng.shuffle(eval_heads)
    # Self-distilled answers: the base's own sampled continuations (T=0.7, top-p 0.95).
    base = FrozenBase(model=model, tokenizer=tokenizer, device=torch.device("cpu"), dtype=torch.float32)
    convs = regenerate_conversations(base, [[{"role": "user", "content": q}] for q in train_heads],
                                     demo.answer_tokens, temperature=0.7, batch_size=32, seed=demo.seed)
    write_jsonl(conv_path, [{"messages": c} for c in convs])
    write_jsonl(eval_prompts_path(demo), [{"messages": [{"role": "user", "content": q}]} for q in eval_heads[:200]])
    log.info(f"demo conversations: {len(train_heads)} → {conv_path}; {min(200, len(eval_heads))} eval prompts → "
          f"{eval_prompts_path(demo)}")
    return out_dir


def main(cfg: RunConfig, presets: list[str]) -> Path:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return build(cfg)


if __name__ == "__main__":
    run_entry("demo_base", __doc__.strip().splitlines()[0], main)
