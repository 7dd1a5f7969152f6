"""`--force` replaces only what an export wrote: a directory holding anything else, a file that is
not a GGUF, or an Ollama file we did not write is refused by name and left exactly as it was."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from scratchlm.checkpoint import save_checkpoint
from scratchlm.cli import main
from scratchlm.errors import ScratchLMError
from scratchlm.export.hf import export_hf, import_hf
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config

pytest.importorskip("gguf")


@pytest.fixture
def checkpoint(tmp_path: Path, bpe_tokenizer: Tokenizer) -> Path:
    config = tiny_config("llama-15m", vocab_size=bpe_tokenizer.vocab_size)
    return save_checkpoint(tmp_path / "ckpt", build_model(config), bpe_tokenizer)


def test_hf_export_force_replaces_its_own_directory(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "hf"
    export_hf(str(checkpoint), out)
    (out / "config.json").write_text("{}")  # a stale file of ours is replaced
    export_hf(str(checkpoint), out, force=True)
    assert (out / "config.json").read_text() != "{}"


def test_hf_export_force_refuses_a_directory_with_foreign_files(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "project"
    export_hf(str(checkpoint), out)
    (out / "notes.txt").write_text("my notes")
    (out / "data").mkdir()
    argv = ["export", "hf", "--checkpoint", str(checkpoint), "--out", str(out), "--force"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "data, notes.txt" in error and "another --out" in error
    assert (out / "notes.txt").read_text() == "my notes" and (out / "data").is_dir()
    assert (out / "model.safetensors").is_file()  # the earlier export is untouched too


def test_hf_export_force_refuses_a_file(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "report.txt"
    out.write_text("keep me")
    with pytest.raises(ScratchLMError, match="is a file"):
        export_hf(str(checkpoint), out, force=True)
    assert out.read_text() == "keep me"


def test_import_hf_force_never_replaces_a_run_directory(tmp_path: Path, checkpoint: Path) -> None:
    exported = tmp_path / "hf"
    export_hf(str(checkpoint), exported)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ScratchLMError, match=r"checkpoints, metrics\.jsonl"):
        import_hf(exported, run, force=True)
    assert (run / "metrics.jsonl").read_text() == "{}\n"
    imported = import_hf(exported, tmp_path / "imported")
    assert import_hf(exported, imported, force=True) == imported  # its own checkpoint: replaced


def test_gguf_force_overwrites_only_a_gguf_file(tmp_path: Path, checkpoint: Path) -> None:
    from scratchlm.export.gguf import export_gguf

    document = tmp_path / "thesis.gguf"
    document.write_text("four years of work")
    with pytest.raises(ScratchLMError, match="not a GGUF file"):
        export_gguf(checkpoint, document, force=True)
    assert document.read_text() == "four years of work"
    out = export_gguf(checkpoint, tmp_path / "model.gguf")
    size = out.stat().st_size
    export_gguf(checkpoint, out, dtype="f16", force=True)
    assert out.stat().st_size < size


def test_ollama_force_overwrites_only_its_own_files(tmp_path: Path, checkpoint: Path) -> None:
    from scratchlm.export.ollama import export_ollama

    out = tmp_path / "project"
    out.mkdir()
    (out / "README.md").write_text("# My project\n")
    (out / "main.py").write_text("print('hi')\n")
    with pytest.raises(ScratchLMError, match=r"README\.md .*not written by"):
        export_ollama(checkpoint, out, force=True)
    assert (out / "README.md").read_text() == "# My project\n"
    assert not (out / "model.gguf").exists()
    (out / "README.md").unlink()
    export_ollama(checkpoint, out)
    export_ollama(checkpoint, out, force=True)  # all three are ours now
    assert (out / "main.py").read_text() == "print('hi')\n"  # other files are never touched
    assert (out / "README.md").read_text().splitlines()[0].endswith("for Ollama")


@pytest.fixture
def full_disk(small_tmpfs: Callable[[str], Path]) -> Path:
    return small_tmpfs("64k")


@pytest.mark.parametrize("kind", ["gguf", "hf", "ollama"])
def test_an_export_onto_a_full_disk_is_one_line_and_leaves_no_partial_file(
    kind: str, full_disk: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (full_disk / "keep.txt").write_text("already here")
    out = full_disk / ("model.gguf" if kind == "gguf" else "export")
    dtype = ["--dtype", "f32"] if kind == "ollama" else []  # its q8_0 default fits in 64 KiB
    assert main(["export", kind, "--checkpoint", str(checkpoint), "--out", str(out), *dtype]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error, error
    assert error.startswith("error: could not write ") and "free space" in error, error
    if kind != "ollama":  # its directory may stay behind, empty
        assert sorted(path.name for path in full_disk.iterdir()) == ["keep.txt"]
    else:
        assert not any(path.is_file() for path in out.iterdir())
    assert (full_disk / "keep.txt").read_text() == "already here"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda d: (d / "config.json").write_text("{not json"),
            "cannot read .*config.json as JSON",
        ),
        (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json is not a JSON object"),
        (
            lambda d: (d / "config.json").write_text('{"model_type": "llama", "hidden_size": 64}'),
            "config.json has no 'num_hidden_layers', which a llama config needs",
        ),
        (
            lambda d: (d / "config.json").write_text(
                (d / "config.json").read_text().replace('"hidden_size": 32', '"hidden_size": "x"')
            ),
            "config.json: .*d_model",
        ),
        (
            lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 9),
            "cannot read .*model.safetensors",
        ),
        (
            lambda d: (d / "tokenizer.json").write_text("\x00"),
            "cannot read .*tokenizer.json as JSON",
        ),
    ],
)
def test_import_of_a_damaged_hf_directory_is_one_line(
    damage: Callable[[Path], object],
    message: str,
    tmp_path: Path,
    checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    exported = export_hf(str(checkpoint), tmp_path / "hf")
    damage(exported)
    out = tmp_path / "imported"
    assert main(["import", "hf", "--checkpoint", str(exported), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and re.search(message, error), error
    assert not out.exists()
