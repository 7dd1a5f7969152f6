"""Fine-tuning records as people have them: one reader for SFT, preference and RL data.

`read_records(source)` returns `(where, record)` pairs, `where` naming the record for error
messages ("data.jsonl:12", "alpaca_data.json record 7", "hf:org/name record 3"):
- `.jsonl` and `.jsonl.gz`: one JSON object per line (blank lines skipped);
- `.json` and `.json.gz`: a JSON array of objects (Alpaca's `alpaca_data.json`,
  `preference_rasbt.json`);
- `hf:NAME[:CONFIG]`: a Hugging Face dataset (hub name or local dataset directory), its train split
  (or `split` given), each row a record.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from scratchlm.errors import ScratchLMError

Record = tuple[str, dict[str, Any]]
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
# What `datasets` calls the splits we read, in order of preference.
HF_SPLITS = {"train": ("train",), "val": ("validation", "valid", "test")}


def is_record_file(source: str | Path) -> bool:
    """A source this module reads: an hf: dataset or an existing file with a record suffix."""
    text = str(source)
    if text.startswith("hf:"):
        return True
    return text.lower().endswith(SUFFIXES) and Path(text).expanduser().is_file()


def first_record(source: str | Path) -> dict[str, Any] | None:
    """The first record of a file or hf: dataset, reading no further than its first line or row
    where it can (a .jsonl whose later lines are broken is still recognised; reading it reports
    them). None when the first line is not a JSON object, or the dataset cannot be streamed
    (then whoever reads it as text reports why)."""
    if str(source).startswith("hf:"):
        return _hf_first_row(str(source))
    path = Path(str(source)).expanduser()
    if path.name.lower().endswith(".jsonl"):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        return None
                    return record if isinstance(record, dict) else None
        return None
    return read_records(path)[0][1]


def read_records(source: str | Path, *, split: str = "train") -> list[Record]:
    text = str(source)
    if text.startswith("hf:"):
        return _hf_records(text, split)
    path = Path(text).expanduser()
    if not path.is_file():
        raise ScratchLMError(
            f"data {path} does not exist; pass a .jsonl, .jsonl.gz or .json file, or hf:NAME"
        )
    name = path.name.lower()
    if not name.endswith(SUFFIXES):
        raise ScratchLMError(
            f"{path}: unknown data format; use .jsonl (one JSON object per line), .jsonl.gz, "
            ".json (a JSON array of objects) or hf:NAME"
        )
    content = _read_text(path)
    if name.endswith((".json", ".json.gz")):
        records = _json_array(path, content)
    else:
        records = _json_lines(path, content)
    if not records:
        raise ScratchLMError(f"{path} holds no records")
    return records


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, EOFError) as error:
        # gzip.BadGzipFile is an OSError: a truncated or mislabelled .gz file
        raise ScratchLMError(f"{path}: cannot read it ({error}); check the file") from None
    except UnicodeDecodeError:
        raise ScratchLMError(f"{path} is not UTF-8; convert it (e.g. iconv -t utf-8)") from None


def _json_lines(path: Path, content: str) -> list[Record]:
    records: list[Record] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            hint = (
                " (a .json file holds one array; name it .json)" if line.lstrip()[:1] == "[" else ""
            )
            raise ScratchLMError(f"{where}: not valid JSON ({error.msg}){hint}") from None
        if isinstance(record, list):
            raise ScratchLMError(
                f"{where}: expected a JSON object per line, got an array (a .json file holds "
                "one array; name the file .json)"
            )
        if not isinstance(record, dict):
            raise ScratchLMError(f"{where}: expected a JSON object per line")
        records.append((where, record))
    return records


def _json_array(path: Path, content: str) -> list[Record]:
    try:
        value = json.loads(content)
    except json.JSONDecodeError as error:
        raise ScratchLMError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg}); a .json file holds one array "
            "of objects (one object per line is .jsonl)"
        ) from None
    if not isinstance(value, list):
        raise ScratchLMError(
            f"{path}: expected a JSON array of objects, got a {type(value).__name__}"
        )
    records: list[Record] = []
    for index, record in enumerate(value, start=1):
        where = f"{path} record {index}"
        if not isinstance(record, dict):
            raise ScratchLMError(f"{where}: expected a JSON object")
        records.append((where, record))
    return records


def _hf_records(source: str, split: str) -> list[Record]:
    name, _, config = source[3:].partition(":")
    if not name:
        raise ScratchLMError(f"{source!r} names no dataset; write hf:NAME or hf:NAME:CONFIG")
    try:
        import datasets
    except ImportError:
        raise ScratchLMError(
            f"reading {source} needs the `datasets` package; install it with "
            "`pip install datasets` (or `pip install scratchlm[hf]`)"
        ) from None
    location = str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
    failures: list[str] = []
    for split_name in HF_SPLITS[split]:
        try:
            dataset = datasets.load_dataset(
                location, config or None, split=split_name, streaming=True
            )
            # streamed: errors in the data itself surface while reading the rows
            rows = [dict(row) for row in dataset]
        except ValueError as error:
            if "split" in str(error).lower():
                failures.append(str(error))
                continue
            raise ScratchLMError(f"{source}: cannot load it ({error})") from None
        except Exception as error:  # datasets raises many types (hub, network, config errors)
            raise ScratchLMError(
                f"{source}: cannot load it ({type(error).__name__}: {error}); check the name "
                "and your network, or pass a local file"
            ) from None
        records = [(f"{source} record {index}", row) for index, row in enumerate(rows)]
        if not records:
            raise ScratchLMError(f"{source} ({split_name} split) holds no records")
        return records
    raise ScratchLMError(
        f"{source} has no {' or '.join(HF_SPLITS[split])} split"
        + (f" ({failures[-1]})" if failures else "")
    )


def _hf_first_row(source: str) -> dict[str, Any] | None:
    name, _, config = source[3:].partition(":")
    try:
        import datasets

        location = str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
        dataset = datasets.load_dataset(location, config or None, split="train", streaming=True)
        return dict(next(iter(dataset)))
    except Exception:  # missing package, dataset, split or network: not ours to report here
        return None
