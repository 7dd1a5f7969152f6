"""Hub import and push, offline: a real HF cache layout read by huggingface_hub itself, and a push
checked up to the folder and file list handed to the uploader."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from scratchlm.checkpoint import load_checkpoint, save_checkpoint
from scratchlm.cli import main
from scratchlm.export import hub
from scratchlm.export.hf import export_hf
from scratchlm.model import build_model
from scratchlm.tokenizer import Tokenizer
from tests.conftest import tiny_config

huggingface_hub = pytest.importorskip("huggingface_hub")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TAG_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def checkpoint(tmp_path: Path, bpe_tokenizer: Tokenizer) -> Path:
    torch.manual_seed(0)
    config = tiny_config("tiny", vocab_size=bpe_tokenizer.vocab_size, init_std=0.2)
    return save_checkpoint(tmp_path / "ckpt", build_model(config), bpe_tokenizer)


def write_hf_cache(cache: Path, repo_id: str, folder: Path, commit: str, ref: str) -> Path:
    """huggingface_hub's cache layout, as its downloads leave it: file contents under
    blobs/<sha256>, snapshots/<commit>/<file> linking to them, refs/<ref> holding the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def offline_cache(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """A cache holding acme/tiny-llama (main, and tag v1 at another commit), with the Hub off."""
    exported = export_hf(str(checkpoint), tmp_path / "hf")
    cache = tmp_path / "hf-cache"
    write_hf_cache(cache, "acme/tiny-llama", exported, COMMIT, "main")
    write_hf_cache(cache, "acme/tiny-llama", exported, TAG_COMMIT, "v1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache, exported


def test_the_hand_written_cache_is_one_huggingface_hub_reads(
    offline_cache: tuple[Path, Path],
) -> None:
    cache, exported = offline_cache
    info = huggingface_hub.scan_cache_dir(cache)
    assert info.warnings == []
    (repo,) = info.repos
    assert repo.repo_id == "acme/tiny-llama"
    revisions = {revision.commit_hash: revision for revision in repo.revisions}
    assert set(revisions) == {COMMIT, TAG_COMMIT}
    assert revisions[COMMIT].refs == frozenset({"main"})
    assert {file.file_name for file in revisions[COMMIT].files} == {
        path.name for path in exported.iterdir()
    }


@pytest.mark.parametrize("revision", [None, "v1", COMMIT])
def test_import_from_the_hub_cache_offline_is_exact(
    revision: str | None,
    offline_cache: tuple[Path, Path],
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "imported"
    extra = ["--revision", revision] if revision else []
    assert main(["import", "hf", "--model", "acme/tiny-llama", "--out", str(out), *extra]) == 0
    assert str(out) in capsys.readouterr().out
    original, imported = load_checkpoint(checkpoint), load_checkpoint(out)
    ours, theirs = original.model.state_dict(), imported.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    assert imported.tokenizer.to_json() == original.tokenizer.to_json()
    commit = TAG_COMMIT if revision == "v1" else COMMIT
    assert imported.metadata["training"]["imported_from"] == f"acme/tiny-llama@{commit}"


def test_a_model_missing_offline_is_one_line(
    offline_cache: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "imported"
    assert main(["import", "hf", "--model", "acme/missing", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error, error
    assert "acme/missing" in error and "HF_HUB_OFFLINE" in error, error
    assert not out.exists()
    # A revision the cache does not hold is the same line, naming the revision.
    command = ["import", "hf", "--model", "acme/tiny-llama", "--out", str(out)]
    assert main([*command, "--revision", "v9"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "'v9'" in error and "acme/tiny-llama" in error, error
    assert not out.exists()


def test_a_local_directory_wins_and_takes_no_revision(
    offline_cache: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, exported = offline_cache
    assert hub.resolve_model_source(exported) == (exported, str(exported))
    command = ["import", "hf", "--model", str(exported), "--out", str(tmp_path / "x")]
    assert main([*command, "--revision", "main"]) == 2
    assert "--revision applies to a Hugging Face Hub id" in capsys.readouterr().err
    assert not hub.is_repo_id("acme/../etc") and not hub.is_repo_id("a/b/c")
    assert hub.is_repo_id("acme/tiny-llama.v2")


class RecordingHubApi:
    """A stand-in for `huggingface_hub.HfApi`, the one in these tests: there is no Hub here, so the
    push is checked up to the calls it makes (which repository, which folder, which files)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self, repo_id: str, *, private: bool, exist_ok: bool) -> None:
        self.calls.append(
            ("create_repo", {"repo_id": repo_id, "private": private, "exist_ok": exist_ok})
        )

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | Path,
        allow_patterns: list[str],
        commit_message: str,
    ) -> None:
        self.calls.append(
            (
                "upload_folder",
                {"repo_id": repo_id, "folder_path": Path(folder_path), "files": allow_patterns},
            )
        )


def test_push_to_hub_uploads_exactly_the_export(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recorder = RecordingHubApi()
    tokens: list[str] = []

    def fake_api(token: str) -> RecordingHubApi:
        tokens.append(token)
        return recorder

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(hub, "hub_api", fake_api)
    out = tmp_path / "hf"
    command = ["export", "hf", "-m", str(checkpoint), "--out", str(out)]
    assert main([*command, "--push-to-hub", "acme/tiny", "--private", "--license", "mit"]) == 0
    assert "pushed 7 files to https://huggingface.co/acme/tiny" in capsys.readouterr().out
    assert tokens == ["hf_test_token"]
    expected_files = sorted(path.name for path in out.iterdir())
    assert expected_files == [
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert recorder.calls == [
        ("create_repo", {"repo_id": "acme/tiny", "private": True, "exist_ok": True}),
        ("upload_folder", {"repo_id": "acme/tiny", "folder_path": out, "files": expected_files}),
    ]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "model_id = 'acme/tiny'" in card and 'license: "mit"' in card


def test_push_without_a_token_fails_before_exporting(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    assert huggingface_hub.get_token() is None

    def no_api(token: str) -> None:
        raise AssertionError("no client may be made without a token")

    monkeypatch.setattr(hub, "hub_api", no_api)
    out = tmp_path / "hf"
    command = ["export", "hf", "-m", str(checkpoint), "--out", str(out)]
    assert main([*command, "--push-to-hub", "acme/tiny"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "token" in error and "hf auth login" in error, error
    assert not out.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ckpt"]
    # A malformed repository id and --private alone are refused the same way, before any work.
    assert main([*command, "--push-to-hub", "not a repo"]) == 2
    assert "ORG/NAME" in capsys.readouterr().err
    assert main([*command, "--private"]) == 2
    assert "--private applies to --push-to-hub" in capsys.readouterr().err
    assert not out.exists()
