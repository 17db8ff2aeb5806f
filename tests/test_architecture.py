"""The package's layering (docs/architecture.md), checked on its import graph read from the sources (AST), counting
imports inside functions too: no cycle anywhere, no module importing a higher layer, the inference core importing
no training, plugin or application code, and no drafter family named by module outside its own folder."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "specforge_het"

# Layers, lowest first: a module may import its own layer and the ones below. The longest matching prefix decides;
# "=name" matches that module only (a package whose __init__ holds no code of its layer's kind).
LAYERS = [
    ("foundation", ["=specforge_het", "specforge_het.registry", "specforge_het.config.errors",
                    "specforge_het.config.ranges", "specforge_het.config.shapes", "specforge_het.config.types",
                    "specforge_het.config.options", "specforge_het.config.schema", "specforge_het.config.presets",
                    "=specforge_het.config", "specforge_het.utils", "=specforge_het.inference",
                    "=specforge_het.export"]),
    ("models and data", ["specforge_het.modeling", "specforge_het.data"]),
    ("inference core and training common", ["specforge_het.inference.accept", "specforge_het.inference.engine",
                                            "specforge_het.inference.kv_cache", "specforge_het.inference.slot_cache",
                                            "specforge_het.inference.tree", "specforge_het.inference.verify",
                                            "specforge_het.inference.proposers", "specforge_het.inference.compiled",
                                            "specforge_het.inference.divergence", "specforge_het.algorithms"]),
    ("evaluation and export formats", ["specforge_het.evaluation", "specforge_het.export.registry",
                                       "specforge_het.export.formats", "specforge_het.export.base_parts",
                                       "specforge_het.export.from_official"]),
    ("drafter families", ["specforge_het.families"]),
    ("exporters, engines and plugins", ["specforge_het.export", "specforge_het.serving", "specforge_het.plugins"]),
    ("applications", ["specforge_het.config.cli", "specforge_het.inference", "specforge_het.serving.parity",
                      "specforge_het.plugins.router", "specforge_het.export.stage", "specforge_het.bench",
                      "specforge_het.train", "specforge_het.trainer_flags", "specforge_het.trainer_sp",
                      "specforge_het.data_gen", "specforge_het.synthesize", "specforge_het.convert",
                      "specforge_het.demo_base", "specforge_het.reference_docs", "specforge_het.cli",
                      "specforge_het.export.__main__"]),
]
INFERENCE_CORE = [p for p in LAYERS[2][1] if p.startswith("specforge_het.inference.")]
NOT_FOR_THE_CORE = ["specforge_het.algorithms", "specforge_het.evaluation", "specforge_het.families",
                    "specforge_het.plugins", "specforge_het.train", "specforge_het.data_gen"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(module: str, path: Path) -> set[str]:
    """The package modules `module` imports anywhere in its file, and the packages whose __init__ that runs."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found |= {f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names}
    found = {m for m in found if m.startswith("specforge_het") and m in MODULES and m != module}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first — except the packages holding `module`, which run
    # before it anyway; a name imported from one of those (`from . import X`) is an edge like any other.
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    return found | {m for m in parents if m in MODULES and m != module and not module.startswith(m + ".")}


GRAPH = {m: imported(m, p) for m, p in MODULES.items()}


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact = prefix.startswith("=")
            name = prefix.lstrip("=")
            if module == name or (not exact and module.startswith(name + ".")):
                length = len(name) + (1000 if exact else 0)
                if best is None or length > best[1]:
                    best = (rank, length)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and docs/architecture.md)"
    return best[0]


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " → ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def test_no_module_imports_a_higher_layer():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {n} ({LAYERS[layer_of(n)][0]})"
              for m in sorted(GRAPH) for n in sorted(GRAPH[m]) if layer_of(n) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_the_inference_core_imports_no_training_plugin_or_application_code():
    core = [m for m in GRAPH if any(m == c or m.startswith(c + ".") for c in INFERENCE_CORE)]
    assert "specforge_het.inference.engine" in core and "specforge_het.inference.proposers.eagle_tree" in core
    bad = [f"{m} imports {n}" for m in core for n in GRAPH[m]
           if any(n == x or n.startswith(x + ".") for x in NOT_FOR_THE_CORE)]
    assert not bad, "\n".join(bad)


def test_no_family_is_imported_outside_its_folder():
    """Families are found through the registries; only applications (benchmarks of one family) and the plugins
    built on a family's drafter (SubSpec's substitute is a classic draft model) import one by name."""
    allowed = ("specforge_het.bench.", "specforge_het.plugins.subspec")
    families = {m.split(".")[2] for m in MODULES if m.startswith("specforge_het.families.")}
    for m in sorted(GRAPH):
        if m.startswith(allowed):
            continue
        for n in GRAPH[m]:
            if not n.startswith("specforge_het.families."):
                continue
            family = n.split(".")[2]
            assert family in families
            own = m.startswith(f"specforge_het.families.{family}")
            shared = family == "block_common" and m.startswith("specforge_het.families.")
            assert own or shared, f"{m} imports the {family} family ({n}); look it up through a registry"
