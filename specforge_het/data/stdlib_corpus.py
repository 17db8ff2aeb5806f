"""An offline corpus present on every machine: the running CPython's standard-library sources.

Files are split by a stable hash of their relative path: ~5% are held out (evaluation prompts), the rest
train the demo base and give the drafter's conversations.
"""
from __future__ import annotations

import ast
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "dist-packages", "lib2to3", "ensurepip",
              "encodings", "pydoc_data"}  # the last two are generated tables and prose dumps, not code
SKIP_FILES = {"html/entities.py", "locale.py"}
MAX_FILE_BYTES = 150_000  # larger stdlib files are mostly generated data


@dataclass
class SourceFile:
    relpath: str
    text: str

    @property
    def held_out(self) -> bool:
        return zlib.crc32(self.relpath.encode()) % 20 == 0


def stdlib_files(max_mb: float) -> list[SourceFile]:
    """Standard-library .py files (tests excluded), in a fixed order, up to max_mb of text."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(p for p in root.rglob("*.py") if not SKIP_PARTS.intersection(p.relative_to(root).parts))
    # A fixed, content-independent order that mixes packages (so a size cap still covers many modules).
    paths.sort(key=lambda p: zlib.crc32(str(p.relative_to(root)).encode()))
    out, total = [], 0
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if str(p.relative_to(root)) in SKIP_FILES or len(text) > MAX_FILE_BYTES:
            continue
        if total + len(text) > max_mb * 1e6:
            break
        out.append(SourceFile(str(p.relative_to(root)), text))
        total += len(text)
    if not out:
        raise RuntimeError(f"no standard-library sources found under {root}")
    return out


def function_heads(src: SourceFile, max_head_lines: int = 24) -> list[str]:
    """Heads of documented functions: `def ...:` through the line that closes its docstring.

    These are the demo's user turns ("here is a signature and docstring — continue the code"). They end at a
    newline: a trailing indent would tokenize as a whitespace token that byte-level BPE never produces before
    a word in running text, and the base would continue from an input it has never seen.
    """
    try:
        tree = ast.parse(src.text)
    except SyntaxError:
        return []
    lines = src.text.splitlines(keepends=True)
    heads = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
            continue
        doc = node.body[0]
        if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
            continue
        if len(node.body) < 2 or node.decorator_list:
            continue
        start, end = node.lineno - 1, doc.end_lineno
        if end - start > max_head_lines:
            continue
        first_indent = len(lines[start]) - len(lines[start].lstrip())
        head = "".join(line[first_indent:] if line.strip() else line for line in lines[start:end])
        heads.append(head if head.endswith("\n") else head + "\n")
    return heads
