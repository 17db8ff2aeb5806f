"""The typed schema of every run: sections of typed keys with built-in defaults.

Every entry point resolves one `RunConfig` (defaults < presets < CLI overrides) and reads the
sections it needs. Values are validated against the annotations here, never eval'd.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .errors import ConfigError, closest
from .options import Option, declared_options
from .ranges import RANGES, check_value
from .types import coerce, field_types, type_name

__all__ = ["SECTIONS", "ConfigError", "RunConfig", "apply_mapping", "coerce", "describe_sections", "field_types",
           "set_key", "type_name"]


@dataclass
class BaseSection:
    """The frozen base (target) model."""

    model_name_or_path: str = "output/demo_base"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    trust_remote_code: bool = False
    # A GGUF base: model_name_or_path is a .gguf file, `pkg:NAME` (the .gguf inside an installed package) or a folder
    # with this file name in it; transformers dequantizes it on every load (`specforge_het.convert` does it once).
    gguf_file: Optional[str] = None


@dataclass
class ModelingSection:
    """The drafter's architecture."""

    # The keys only one family reads (block_size, fc_norm, ...) are declared in its folder: families/*/options.py.
    draft_layers: int = 1
    # HF model_type of the draft decoder layers (llama, qwen3, qwen3_moe, mistral, gemma2, ...); None = the base's.
    draft_family: Optional[str] = None
    draft_hidden_size: Optional[int] = None  # None = the base's width; otherwise projections map between widths
    embedding: Literal["shared", "own"] = "shared"  # shared (the base's, frozen) | own (trainable, at the draft width)
    # shared (the base's, frozen) | own (trainable; implied by draft_vocab_size)
    lm_head: Literal["shared", "own"] = "shared"
    draft_vocab_size: Optional[int] = None  # top-N target tokens of the training data; None = the full vocabulary
    # Merged into the draft decoder's HF config last (e.g. {"intermediate_size": 512, "num_experts": 4}).
    draft_config_overrides: dict = field(default_factory=dict)
    # Start draft layer i as a copy of base block init_from_base_layer + i (same family and width); None = random.
    init_from_base_layer: Optional[int] = None
    # Fine-tune: start every drafter weight (its draft vocabulary included) from this trained checkpoint of the same
    # architecture and shapes, e.g. to continue a drafter on more data; None = a fresh drafter.
    init_from_drafter: Optional[str] = None
    # > 0: train those copied layers through rank-r LoRA adapters (peft) only; saved drafters hold merged weights.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])


@dataclass
class AlgorithmSection:
    """Which drafting algorithm is trained (see specforge_het/algorithms/)."""

    # The keys only one family reads (ttt_length, num_anchors, ...) are declared in its folder: families/*/options.py.
    name: str = "eagle2"
    # multi-step losses (EAGLE-3's training-time test, block drafters' positions): step i's loss is weighted decay**i
    ttt_decay: float = 0.8
    # how the drafter's distribution q is fitted to the base's p (algorithms/losses.py): forward_kl (soft CE, EAGLE's),
    # reverse_kl, jsd, tv (1 − Σ min(p, q)) or lk (−log Σ min(p, q)); the distillation term of every algorithm
    loss: Literal["forward_kl", "reverse_kl", "jsd", "tv", "lk"] = "forward_kl"


@dataclass
class DataSection:
    """Conversations in, hidden-state dataset out."""

    conversations: str = "output/demo/conversations.jsonl"
    dataset_dir: str = "output/demo/dataset"
    max_length: int = 512
    max_samples: Optional[int] = None
    shard_size: int = 256  # samples per shard
    batch_size: int = 8  # base forward batch while dumping
    hidden_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    chat_template: Optional[str] = None  # path to a Jinja template overriding the tokenizer's
    # Extra base layers to capture besides the last (id k = output of decoder block k, 0-based), e.g. EAGLE-3's.
    aux_layer_ids: list[int] = field(default_factory=list)
    ds_range: Optional[list[int]] = None  # [a, b): dump only samples a..b-1 (split work across machines)
    merge_from: list = field(default_factory=list)  # data_gen merges these dataset dirs into dataset_dir
    # offline: train reads dataset_dir | online: train runs the base on the fly
    mode: Literal["offline", "online"] = "offline"
    # the dataset layout train reads: ours, or eagle_pt (official EAGLE .pt files)
    format: Literal["specforge_het", "eagle_pt"] = "specforge_het"
    regenerate_to: Optional[str] = None  # if set: the base rewrites the assistant turns first, saved here
    regen_temperature: float = 0.7  # 0 = greedy
    regen_max_new_tokens: int = 256
    # the base's dtype while it answers: None = base.dtype; auto = bfloat16 where a one-second probe shows bf16
    # matmuls are faster here (AVX512-BF16 / AMX CPUs, GPUs), else float32. Hidden states are dumped in base.dtype.
    regen_dtype: Optional[Literal["auto", "float32", "bfloat16", "float16"]] = None
    # Pack several conversations per training row (up to max_length tokens; data/packing.py): no padding, the
    # same loss. Every algorithm, offline and online.
    packing: bool = False


@dataclass
class TrainingSection:
    """Drafter training (a transformers.Trainer underneath; names follow TrainingArguments)."""

    output_dir: str = "output/demo/drafter"
    learning_rate: float = 3e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1
    time_budget_s: Optional[float] = None  # stop (and save) after the step that crosses this many seconds
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 10
    lr_scheduler_type: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                               "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr",
                               "warmup_stable_decay"] = "cosine"
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 0.5
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    seed: int = 0
    # none | tensorboard | wandb | json, comma-separated for several (wandb: WANDB_MODE=offline needs no network)
    report_to: str = "none"
    dataloader_num_workers: int = 0
    # auto: bf16 autocast over fp32 master weights on a GPU that has bf16, pure fp32 on CPU; probe: bf16 autocast
    # wherever a one-second matmul probe shows it is faster (AVX512-BF16 / AMX CPUs too); or no | bf16 | fp16
    mixed_precision: Literal["auto", "no", "bf16", "fp16", "probe"] = "auto"
    # A DeepSpeed config (inline mapping; see the zero2 / zero3 presets). Launch with several processes
    # (accelerate launch / deepspeed / torchrun); None = plain data parallel.
    deepspeed: Optional[dict] = None
    # PyTorch FSDP2 through accelerate (see the fsdp preset): reshard_after_forward (true = full shard),
    # cpu_offload, wrap ("layers": each draft decoder layer its own unit, "none": the drafter as one unit).
    # None = off. Launch with several processes, like deepspeed.
    fsdp: Optional[dict] = None
    # Sequence parallelism (Ulysses): groups of this many processes split every sequence's rows; attention meets
    # through all-to-all over heads. 1 = off. Must divide the processes launched and the drafter's heads; EAGLE-3.
    sequence_parallel: int = 1
    # In-training evaluation on a held-out split: per-step accuracy and the simulated τ of chain drafting.
    eval_fraction: float = 0.0  # share of the dataset held out (0 = no evaluation)
    eval_steps: int = 100
    eval_depth: int = 5  # chain depth of the simulated τ


@dataclass
class InferenceSection:
    """Speculative decoding evaluation."""

    drafter_path: str = "output/demo/drafter"
    output_dir: str = "output/demo/inference"
    strategy: Literal["chain", "tree", "budget", "both", "all"] = "both"  # both = chain + tree; all = the three
    depth: int = 5  # chain length, or tree depth
    top_k: int = 8  # tree: children expanded per node
    total_tokens: int = 32  # tree: draft nodes verified per step
    budget: int = 64  # budget strategy (SpecExec-style best-first tree): draft nodes verified per step, 16…1024
    budget_rounds: int = 8  # budget strategy: drafter calls per step (each expands the top_k best open nodes)
    max_new_tokens: int = 96
    prompts: Optional[str] = None  # JSONL of conversations / MT-bench questions; None = data.conversations
    num_prompts: int = 8
    prompt_offset: int = 0  # skip this many prompts first (e.g. to step past the training split)
    check_lossless: bool = True  # greedy only: compare every output with transformers' greedy generate
    temperature: float = 0.0  # 0 = greedy; > 0 = sampling (exact recursive rejection sampling)
    top_p: float = 1.0
    seed: int = 0
    # sampling: draft tokens drawn from the drafter (accepts Σ min(p, q)) or its top tokens as point-mass drafts
    draft_sampling: Literal["sampled", "greedy"] = "sampled"
    batch_size: int = 1  # sequences decoded together (left-padded; each accepts its own number of draft tokens)
    # float32: the final norm + lm_head of every decode and verify forward in fp32 over a bf16/fp16 base (fewer
    # rounding ties); model: as the base computes them.
    verify_precision: Literal["model", "float32"] = "model"
    # Who drafts: None = the drafter's own proposer; any registered proposer name (`tree`, `block`, `markov_block`,
    # `string`: a draft LM with its own tokenizer drafts text, re-encoded for the base — chains only).
    proposer: Optional[str] = None
    # The base's (and drafter's) dtype while decoding: None = base.dtype; auto = bfloat16 where a one-second probe shows
    # bf16 matmuls faster here (AVX512-BF16 / AMX CPUs, GPUs), else float32. Greedy lossless then means: every
    # divergence from base-only decoding in that dtype is a proven near-tie (inference/divergence.py).
    dtype: Optional[Literal["auto", "float32", "bfloat16", "float16"]] = None
    # torch.compile the base's decode/verify forward and the drafter's forward (inductor, dynamic shapes): the same
    # tokens, less per-call overhead; costs a compilation (about a minute on CPU) at start-up. Eager when false.
    compile: bool = False
    # Pre-allocated KV caches of fixed shapes with in-place tree compaction (inference/slot_cache.py): the same
    # tokens; what compiled graphs need to stay static (with compile on CUDA: CUDA graphs). Attention then reads the
    # whole capacity every step, so eager CPU decoding is slower with it.
    static_cache: bool = False
    # Lossless check on a bf16/fp16 base: a divergence from the reference is a near-tie (passes) when the base's two
    # tokens are within this many ulps of its dtype, or within twice the base's own shape-to-shape logit noise at that
    # position, in every shape (inference/divergence.py); else it fails.
    near_tie_ulps: float = 2.0


@dataclass
class PluginsSection:
    """Inference plugins (specforge_het/plugins/): subspec, router, offload, async_draft, applied in that order."""

    enabled: list = field(default_factory=list)  # offload | subspec | async_draft | router
    # each plugin's own keys are declared in plugins/options.py


@dataclass
class BenchmarkSection:
    """Question-file benchmark (python -m specforge_het.inference.benchmark): every file × every strategy of
    inference.strategy, base-only decoding of the same turns in the same run, one summary table."""

    mt_bench: Optional[str] = None  # MT-bench question.jsonl: {"question_id", "category", "turns": [...]}, multi-turn
    humaneval: Optional[str] = None  # HumanEval-style JSONL: {"task_id", "prompt"}; completed as raw text, no template
    gsm8k: Optional[str] = None  # GSM8K-style JSONL: {"question", "answer"}; the question is one user turn
    max_samples: int = 10  # questions read per file (all turns of each)
    selection: Literal["first", "spread"] = "first"  # the first max_samples rows, or rows spread over the file
    # leave out questions that share text (an 8-word n-gram) with data.conversations / data.regenerate_to
    exclude_training: bool = False
    output_dir: str = "output/demo/benchmark"
    # proposal shapes decoded instead of inference.strategy's, one row each: 'chain:DEPTH' or
    # 'tree:DEPTH:TOP_K:NODES' (e.g. ['chain:2', 'tree:3:4:10']); base-only is decoded once for all of them
    shapes: list[str] = field(default_factory=list)
    sampling_temperature: float = 1.0  # bench.serving: the temperature of its sampled rows (beside greedy)
    # bench.serving: the dtype vLLM serves in. bfloat16 is faster on AMX / AVX512-BF16 CPUs; our reference decoder
    # stays in base.dtype, so per-position parity is checked in float32 only (bf16 rounds differently).
    serving_dtype: Literal["float32", "bfloat16"] = "float32"
    # bench.serving: also serve each drafter's sampled row with the engine defect the vLLM worker measures patched
    # (vLLM 0.32's CPU build divides target logits by uninitialised memory at T > 0: serving/vllm_worker.py), as an
    # extra row marked "patched"; the unpatched rows stay
    serving_patch_engine: bool = False
    # bench.serving: drafters exported to and served by the real engines (demo/serving_variants.sh trains them)
    serving_drafters: list[str] = field(default_factory=lambda: [
        "output/demo/drafter", "output/demo/variants/eagle3", "output/demo/variants/eagle3_reduced_vocab",
        "output/demo/variants/eagle3_half_width"])


@dataclass
class ServeSection:
    """The OpenAI-compatible HTTP server (python -m specforge_het.inference.server)."""

    host: str = "127.0.0.1"
    port: int = 8000
    model_name: Optional[str] = None  # the id /v1/models reports; None = the drafter folder's name
    max_tokens_limit: int = 2048  # requests asking for more get a 400
    default_max_tokens: int = 256
    max_batch: int = 8  # rows decoded together (the `n` choices of a request count as rows; n is capped here)
    batch_wait_ms: float = 20.0  # how long a batch waits for more requests once the first has arrived


@dataclass
class ExportSection:
    """Checkpoint conversion."""

    checkpoint: str = "output/demo/drafter"
    to: Literal["specforge_het", "sglang", "vllm"] = "specforge_het"
    out: str = "output/demo/export"
    dtype: Optional[Literal["float32", "bfloat16", "float16"]] = None  # None keeps the checkpoint's dtype
    base_model: Optional[str] = None  # for the launch command; None = the drafter's training base
    feature_layers: Optional[list[int]] = None  # importing an EAGLE-3 checkpoint without eagle_config: its base layers
    num_steps: int = 5  # launch command: --speculative-num-steps
    topk: int = 8  # launch command: --speculative-eagle-topk
    num_draft_tokens: int = 32  # launch command: --speculative-num-draft-tokens


@dataclass
class SynthSection:
    """Prompt synthesis by the base itself (python -m specforge_het.synthesize; Magpie-style)."""

    out: str = "output/synth/prompts.jsonl"
    num_prompts: int = 1000  # instructions kept (after dedup and filters)
    max_prompt_tokens: int = 96  # an instruction longer than this is dropped (cut, not finished)
    temperature: float = 1.0
    top_p: float = 1.0
    min_words: int = 4
    batch_size: int = 32
    seed: int = 0
    time_budget_s: Optional[float] = None  # stop (with what is kept so far) after this many seconds
    # the base's dtype while it writes prompts: None = base.dtype; auto = bfloat16 where a one-second probe shows bf16
    # matmuls are faster on this machine (AVX512-BF16 / AMX CPUs, GPUs), else float32
    dtype: Optional[Literal["auto", "float32", "bfloat16", "float16"]] = None
    # more held-out files (any conversation / question format) no prompt may overlap; the run's benchmark files and
    # inference.prompts are always held out
    heldout: list[str] = field(default_factory=list)
    # openers the base continues after its user-turn header (row i of a batch gets opener i mod len), so its
    # instructions cover task kinds plain Magpie rarely writes (code, math, role-play, extraction, ...); each kept
    # prompt starts with its opener. Empty: plain Magpie (the header alone)
    openers: list[str] = field(default_factory=list)


@dataclass
class ConvertSection:
    """GGUF → plain HF folder (python -m specforge_het.convert): safetensors, config, tokenizer, chat template."""

    source: Optional[str] = None  # a .gguf file, `pkg:NAME` (the .gguf an installed package ships) or a folder
    gguf_file: Optional[str] = None  # with a folder source: the file's name in it
    out: str = "output/converted"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


@dataclass
class DemoSection:
    """The embedded demo base: a small Llama trained on CPython's standard library."""

    output_dir: str = "output/demo_base"
    conversations_out: str = "output/demo/conversations.jsonl"
    vocab_size: int = 4096
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    intermediate_size: int = 704
    seq_len: int = 256
    batch_size: int = 16
    train_steps: int = 400
    # None = auto: a one-second probe times a bf16 and an fp32 matmul of the demo's shape and autocasts to bf16 only
    # where that is faster (AVX512-BF16 / AMX CPUs, GPUs); on AVX2-only CPUs bf16 is ~20x slower. Weights stay fp32.
    bf16_autocast: Optional[bool] = None
    learning_rate: float = 3e-3
    num_conversations: int = 640
    answer_tokens: int = 96
    max_corpus_mb: float = 8.0
    seed: int = 0


def with_declared_options(section: str, cls: type) -> type:
    """`cls` plus the keys the families and plugins declare for `section` (config/options.py), under the same name:
    `--modeling.block_size` is typed, range-checked and listed like a generic key, but lives with DFlash."""
    options = [o for o in declared_options() if o.section == section]
    RANGES.update({f"{section}.{o.key}": o.range for o in options if o.range is not None})
    return dataclasses.make_dataclass(
        cls.__name__, [(o.key, o.type, _default(o)) for o in options], bases=(cls,),
        namespace={"__doc__": cls.__doc__, "__module__": cls.__module__})


def _default(option: Option):
    if isinstance(option.default, (list, dict)):
        return field(default_factory=lambda d=option.default: type(d)(d))
    return field(default=option.default)


ModelingSection = with_declared_options("modeling", ModelingSection)
AlgorithmSection = with_declared_options("algorithm", AlgorithmSection)
PluginsSection = with_declared_options("plugins", PluginsSection)

SECTIONS: dict[str, type] = {
    "base": BaseSection,
    "modeling": ModelingSection,
    "algorithm": AlgorithmSection,
    "data": DataSection,
    "training": TrainingSection,
    "inference": InferenceSection,
    "plugins": PluginsSection,
    "benchmark": BenchmarkSection,
    "export": ExportSection,
    "serve": ServeSection,
    "synth": SynthSection,
    "convert": ConvertSection,
    "demo": DemoSection,
}


@dataclass
class RunConfig:
    base: BaseSection = field(default_factory=BaseSection)
    modeling: ModelingSection = field(default_factory=ModelingSection)
    algorithm: AlgorithmSection = field(default_factory=AlgorithmSection)
    data: DataSection = field(default_factory=DataSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    inference: InferenceSection = field(default_factory=InferenceSection)
    plugins: PluginsSection = field(default_factory=PluginsSection)
    benchmark: BenchmarkSection = field(default_factory=BenchmarkSection)
    export: ExportSection = field(default_factory=ExportSection)
    serve: ServeSection = field(default_factory=ServeSection)
    synth: SynthSection = field(default_factory=SynthSection)
    convert: ConvertSection = field(default_factory=ConvertSection)
    demo: DemoSection = field(default_factory=DemoSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def set_key(cfg: RunConfig, dotted: str, value: Any, source: str) -> None:
    """Set `section.key` on cfg after validating both names and the value's type."""
    if "." not in dotted:
        raise ConfigError(f"{source}: '{dotted}' is not of the form section.key; sections: {', '.join(SECTIONS)}")
    section, key = dotted.split(".", 1)
    if section not in SECTIONS:
        raise ConfigError(f"{source}: unknown config section '{section}'; {closest(section, SECTIONS)}")
    types = field_types(SECTIONS[section])
    if key not in types:
        raise ConfigError(f"{source}: unknown config key '{section}.{key}'; "
                          f"{closest(key, types)} (keys of [{section}]: {', '.join(types)})")
    where = f"{section}.{key} (from {source})"
    value = coerce(value, types[key], where)
    check_value(dotted, value, where)
    setattr(getattr(cfg, section), key, value)


def apply_mapping(cfg: RunConfig, mapping: dict, source: str) -> None:
    """Apply a nested {section: {key: value}} mapping (a preset or a saved config)."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(mapping).__name__}")
    for section, keys in mapping.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown config section '{section}'; {closest(section, SECTIONS)}")
        if not isinstance(keys, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping of keys, got {type(keys).__name__}")
        for key, value in keys.items():
            set_key(cfg, f"{section}.{key}", value, source)


def describe_sections() -> str:
    """Human-readable listing of every section and key with its type (choices, range) and default, for --help."""
    lines = []
    defaults = RunConfig()
    owners = {f"{o.section}.{o.key}": o.owner for o in declared_options()}
    for name, cls in SECTIONS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"  [{name}]  {doc}")
        for key, tp in field_types(cls).items():
            rng = RANGES.get(f"{name}.{key}")
            bounds = f", {str(rng).replace('x', key)}" if rng is not None else ""
            default = getattr(getattr(defaults, name), key)
            owner = f" [{owners[f'{name}.{key}']}]" if f"{name}.{key}" in owners else ""
            lines.append(f"    --{name}.{key} ({type_name(tp)}{bounds}, default {default!r}){owner}")
    return "\n".join(lines)
