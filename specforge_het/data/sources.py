"""Where conversation rows come from besides our JSONL: any source the `datasets` library reads (the `data` extra) —
local parquet / arrow / CSV / JSON files, a folder of them, a `save_to_disk` folder, or a hub dataset id where a hub
is reachable — streamed row by row, so a large input is never held whole. Rows keep the forms conversations.py
accepts (messages, ShareGPT conversations, MT-bench turns, prompt, question)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..config.errors import ConfigError, first_line
from ..utils.extras import require

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json",
            ".tsv": "csv"}
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def is_datasets_source(path: str) -> bool:
    """Everything but one of our JSONL / JSON (optionally .gz) files."""
    p = Path(path)
    if p.is_file():
        return p.suffix in (".parquet", ".arrow", ".csv", ".tsv")
    if p.is_dir():
        return True
    # org/name whose org is no local folder and whose name is no file name of ours: a hub dataset id
    return (path.count("/") == 1 and not path.startswith((".", "/")) and not p.parent.is_dir()
            and p.suffix not in (".jsonl", ".json", ".gz"))


def _split(ds, where: str):
    if hasattr(ds, "keys"):  # a DatasetDict: its train split, else its only one
        splits = list(ds.keys())
        if "train" in splits:
            return ds["train"]
        if len(splits) == 1:
            return ds[splits[0]]
        raise ConfigError(f"{where}: several splits ({', '.join(splits)}) and none is 'train'")
    return ds


def open_source(path: str):
    """An iterable `datasets` dataset over the source (streamed where the format allows)."""
    require("datasets")
    import datasets

    p = Path(path)
    try:
        if p.is_dir() and any((p / m).is_file() for m in SAVED_MARKERS):
            return _split(datasets.load_from_disk(str(p)), path)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in BUILDERS and f.is_file())
            kinds = {BUILDERS[f.suffix] for f in files}
            if len(kinds) != 1:
                raise ConfigError(f"data.conversations {path}: expected a folder of one kind of data file "
                                  f"({', '.join(sorted(BUILDERS))}), found {', '.join(sorted(kinds)) or 'none'}")
            return datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train",
                                         streaming=True)
        if p.is_file():
            return datasets.load_dataset(BUILDERS[p.suffix], data_files=str(p), split="train", streaming=True)
        return _split(datasets.load_dataset(path, streaming=True), path)
    except ConfigError:
        raise
    except Exception as e:  # datasets raises many types: a missing hub (offline), a corrupt file, a schema clash
        raise ConfigError(f"data.conversations {path}: `datasets` cannot read it ({first_line(e)})") from None


def iter_rows(path: str) -> Iterator[tuple[str, object]]:
    """(where, row) for every row of a `datasets` source."""
    try:
        for i, row in enumerate(open_source(path)):
            yield f"{path}[{i}]", row
    except ConfigError:
        raise
    except Exception as e:  # a streamed file that breaks half-way
        raise ConfigError(f"data.conversations {path}: reading failed ({first_line(e)})") from None
