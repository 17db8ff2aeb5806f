"""Check an SGLang draft export against SGLang's own installed sources, not our reading of them.

SGLang cannot build its model classes on a CPU-only machine (its kernels need CUDA), and its loader silently skips
unknown names, so a misnamed key would serve garbage. This reads `sglang/srt/models/*.py` with `ast` (never
importing them): the module attributes each class declares (`self.qkv_proj = QKVParallelLinear(...)`, `del
self.input_layernorm` on layer 0), and the renames in `load_weights` (`stacked_params_mapping`, `legacy_name_map`,
the `model.` prefix). From those it lists the parameters SGLang's draft class will have, applies the loader's name
logic to every key of our export, and checks: every key lands on a parameter, every parameter is covered (except
those SGLang takes from the target), each key's shape fits its slot. Shapes follow SGLang's constructors
(QKVParallelLinear(in, head_dim, heads, kv_heads) = [(heads + 2·kv)·head_dim, in], MergedColumnParallelLinear = the
stacked gate/up, RMSNorm = [hidden], ...).

    pip install --no-deps sglang==0.5.23     # Python sources only
"""
from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

from safetensors import safe_open

from ..config.errors import ConfigError


def sglang_models_dir() -> Path:
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("SGLang's sources are not installed: pip install --no-deps sglang==0.5.23")
    return Path(list(spec.submodule_search_locations)[0]) / "srt" / "models"


class Source:
    """The classes of one SGLang model file: declared module attributes, deletions, literal tables."""

    def __init__(self, path: Path):
        self.tree = ast.parse(path.read_text())
        self.classes = {n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef)}

    def attrs(self, cls: str) -> dict[str, str]:
        """`self.a = Callee(...)` and `self.a.b = Callee(...)` in __init__ → {"a": "Callee", "a.b": "Callee"}."""
        out = {}
        for node in ast.walk(self._method(cls, "__init__")):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                for target in node.targets:
                    name = _self_path(target)
                    if name:
                        out[name] = _callee(node.value.func)
        return out

    def deleted(self, cls: str) -> set[str]:
        return {_self_path(t) for n in ast.walk(self._method(cls, "__init__")) if isinstance(n, ast.Delete)
                for t in n.targets} - {None}

    def literal(self, cls: str, var: str):
        """The first literal assigned to local `var` in any method of `cls` (e.g. the legacy weight loader's)."""
        if cls not in self.classes:
            raise ConfigError(f"SGLang sources: class {cls} not found (SGLang version changed?)")
        for node in ast.walk(self.classes[cls]):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == var for t in node.targets):
                return ast.literal_eval(node.value)
        return None

    def prefixes_model(self, cls: str) -> bool:
        """Whether load_weights prepends "model." to names (the EAGLE-1 loaders)."""
        loader = self._method(cls, "load_weights")
        return any(isinstance(n, ast.Constant) and n.value == "model." for n in ast.walk(loader))

    def _method(self, cls: str, name: str) -> ast.FunctionDef:
        if cls not in self.classes:
            raise ConfigError(f"SGLang sources: class {cls} not found (SGLang version changed?)")
        for node in self.classes[cls].body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return node
        raise ConfigError(f"SGLang sources: {cls}.{name} not found")


def _self_path(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join(reversed(parts)) if isinstance(node, ast.Name) and node.id == "self" and parts else None


def _callee(func) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "?")


def _need(attrs: dict, name: str, cls: str) -> None:
    if name not in attrs:
        raise ConfigError(f"SGLang sources: {cls} declares no {name!r} (found {sorted(attrs)}); the export layout "
                          "needs updating for this SGLang version")


def expected_params(cfg: dict, models: Path) -> tuple[dict, dict, set, bool]:
    """(parameter name → shape, stacked mapping, names SGLang may take from the target, prefixes model.)."""
    arch = cfg["architectures"][0]
    H, inter = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    family = "qwen2" if arch.startswith("Qwen2") else "llama"
    base_src = Source(models / f"{family}.py")
    P = family.capitalize()
    attn, mlp, layer = base_src.attrs(f"{P}Attention"), base_src.attrs(f"{P}MLP"), base_src.attrs(f"{P}DecoderLayer")
    for n in ("qkv_proj", "o_proj"):
        _need(attn, n, f"{P}Attention")
    for n in ("gate_up_proj", "down_proj"):
        _need(mlp, n, f"{P}MLP")
    for n in ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm"):
        _need(layer, n, f"{P}DecoderLayer")
    eagle3 = arch.endswith("Eagle3")
    src = Source(models / ("llama_eagle3.py" if eagle3 else f"{family}_eagle.py"))
    model_attrs, layer_attrs = src.attrs(f"{P}Model"), src.attrs(f"{P}DecoderLayer")
    top = f"{P}ForCausalLMEagle3" if eagle3 else arch
    for n in ("embed_tokens", "fc", "layers"):
        _need(model_attrs, n, f"{P}Model (eagle)")
    qkv_bias = family == "qwen2"
    params: dict[str, tuple] = {}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        d_in = 2 * H if eagle3 and i == 0 else H
        params[p + "self_attn.qkv_proj.weight"] = ((nh + 2 * nkv) * hd, d_in)
        if qkv_bias:
            params[p + "self_attn.qkv_proj.bias"] = ((nh + 2 * nkv) * hd,)
        params[p + "self_attn.o_proj.weight"] = (H, nh * hd)
        params[p + "mlp.gate_up_proj.weight"] = (2 * inter, H)
        params[p + "mlp.down_proj.weight"] = (H, inter)
        params[p + "post_attention_layernorm.weight"] = (H,)
        if not (i == 0 and "input_layernorm" in src.deleted(f"{P}DecoderLayer")):
            params[p + "input_layernorm.weight"] = (H,)
        if eagle3:
            _need(layer_attrs, "hidden_norm", "LlamaDecoderLayer (eagle3)")
            params[p + "hidden_norm.weight"] = (H,)
    from_target = {"model.embed_tokens.weight"}
    params["model.embed_tokens.weight"] = (cfg["vocab_size"], H)
    if eagle3:
        _need(model_attrs, "norm", "LlamaModel (eagle3)")
        target = cfg.get("target_hidden_size", H)
        k = len((cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids") or [0, 0, 0])
        params["model.fc.weight"] = (H, k * target)
        params["model.norm.weight"] = (H,)
        if cfg.get("fc_norm"):  # EAGLE-3.1: one RMSNorm per fused feature (LlamaModel.fc_norm, a ModuleList)
            _need(model_attrs, "fc_norm", "LlamaModel (eagle3)")
            for i in range(k):
                params[f"model.fc_norm.{i}.weight"] = (target,)
        params["lm_head.weight"] = (cfg.get("draft_vocab_size") or cfg["vocab_size"], H)
        if cfg.get("draft_vocab_size") is None:
            from_target.add("lm_head.weight")
    else:
        params["model.fc.weight"] = (H, 2 * H)
        params["model.fc.bias"] = (H,)
        params["lm_head.weight"] = (cfg["vocab_size"], H)
        from_target.add("lm_head.weight")
    stacked = src.literal(top, "stacked_params_mapping") if eagle3 else \
        base_src.literal(f"{P}ForCausalLM", "stacked_params_mapping")
    if not stacked:
        raise ConfigError(f"SGLang sources: no stacked_params_mapping in the {top} loader")
    legacy = (src.literal(top, "legacy_name_map") or {}) if eagle3 else {}
    return params, {"stacked": stacked, "legacy": legacy}, from_target, (not eagle3 and src.prefixes_model(top))


def check_sglang_export(out_dir: str | Path) -> dict:
    """Raise ConfigError naming every problem; return a summary when the export loads cleanly."""
    out_dir = Path(out_dir)
    cfg = json.loads((out_dir / "config.json").read_text())
    params, maps, from_target, prefix_model = expected_params(cfg, sglang_models_dir())
    with safe_open(str(out_dir / "model.safetensors"), framework="pt") as f:
        keys = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    covered: dict[str, list] = {}
    problems = []
    eagle3 = cfg["architectures"][0].endswith("Eagle3")
    for key, (shape, dtype) in keys.items():
        name = key
        if eagle3 and key in ("d2t", "t2d"):
            if key == "d2t" and (dtype != "I64" or shape != (cfg["draft_vocab_size"],)):
                problems.append(f"d2t must be int64 [{cfg['draft_vocab_size']}], is {dtype} {list(shape)}")
            if key == "t2d" and shape != (cfg["vocab_size"],):
                problems.append(f"t2d must have shape [{cfg['vocab_size']}], is {list(shape)}")
            continue
        for old, new in maps["legacy"].items():
            name = name.replace(old, new)
        if prefix_model and "lm_head" not in name:
            name = "model." + name
        shard = None
        for fused, part, shard_id in maps["stacked"]:
            if part in name:
                name, shard = name.replace(part, fused), shard_id
                break
        if not eagle3 or name in params:
            param = name
        else:
            param = f"model.{name}"
        if param not in params:
            problems.append(f"{key}: SGLang has no parameter {param!r} for it (it would be silently skipped)")
            continue
        covered.setdefault(param, []).append((shard, shape))
    for param, shape in params.items():
        parts = covered.get(param)
        if not parts:
            if param not in from_target:
                problems.append(f"{param}: no key in the export covers it (SGLang would leave it uninitialised)")
            continue
        if parts[0][0] is None:
            if parts[0][1] != shape:
                problems.append(f"{param}: export shape {list(parts[0][1])}, SGLang expects {list(shape)}")
        else:
            rows = sum(s[0] for _, s in parts)
            if (rows, *parts[0][1][1:]) != shape:
                problems.append(f"{param}: shards {[(sid, list(s)) for sid, s in parts]} do not stack to {list(shape)}")
    if problems:
        raise ConfigError(f"{out_dir}: export does not match SGLang's {cfg['architectures'][0]}:\n  "
                          + "\n  ".join(problems))
    return {"architecture": cfg["architectures"][0], "keys": len(keys), "parameters": len(params),
            "from_target": sorted(p for p in from_target if p not in covered)}
