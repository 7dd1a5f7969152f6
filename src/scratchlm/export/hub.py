"""The Hugging Face Hub: `import hf --model ORG/NAME` downloads, `export hf --push-to-hub` uploads.

Both go through `huggingface_hub` (installed with transformers), imported inside the functions so
that reading this module costs nothing. A download fetches only what `import hf` reads (config,
tokenizer, safetensors weights, the custom layout's code files) into the ordinary HF cache
(`HF_HUB_CACHE`), so `HF_HUB_OFFLINE=1` with a filled cache works without a network. An upload
sends the folder that `export hf` just wrote, file by file as listed, and nothing else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Protocol

from scratchlm.errors import ScratchLMError

# What `import hf` reads from a repository (the shard pattern covers model-0000K-of-0000N too).
DOWNLOAD_PATTERNS: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "configuration_scratchlm.py",
    "modeling_scratchlm.py",
)
# ORG/NAME as the Hub spells repository ids (letters, digits, '-', '_', '.'; at most 96 each).
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})


def is_repo_id(value: str) -> bool:
    """True for an ORG/NAME Hub id (the caller checks first that no local path has this name)."""
    return REPO_ID_PATTERN.match(value) is not None and ".." not in value


def check_repo_id(value: str, flag: str) -> str:
    if not is_repo_id(value):
        raise ScratchLMError(
            f"{flag} {value!r} is not a Hugging Face repository id; write it as ORG/NAME "
            "(letters, digits, '-', '_' and '.')"
        )
    return value


def offline_requested() -> bool:
    """HF_HUB_OFFLINE as it is now: huggingface_hub reads it once, at import, so a value set
    later (a script, a test) would otherwise be ignored."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in TRUE_VALUES


def download_model(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot folder of `repo_id` at `revision` (a branch, tag or commit; default
    main), downloaded into the HF cache unless it is there; every failure is one line."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    check_repo_id(repo_id, "--model")
    at = f" at revision {revision!r}" if revision else ""
    offline = offline_requested()
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            # None: huggingface_hub's own default; a value set after its import is read here.
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            allow_patterns=list(DOWNLOAD_PATTERNS),
            local_files_only=offline,
        )
    except GatedRepoError:
        raise ScratchLMError(
            f"{repo_id} is gated on the Hugging Face Hub; accept its terms on the model page and "
            "log in (`hf auth login` or HF_TOKEN), then run the import again"
        ) from None
    except RepositoryNotFoundError:
        raise ScratchLMError(
            f"{repo_id} was not found on the Hugging Face Hub (or it is private); check the id, "
            "or log in (`hf auth login` or HF_TOKEN) for a private one"
        ) from None
    except RevisionNotFoundError:
        raise ScratchLMError(
            f"{repo_id} has no revision {revision!r}; pass an existing branch, tag or commit "
            "with --revision"
        ) from None
    except IncompleteSnapshotError:
        raise ScratchLMError(
            f"the cached snapshot of {repo_id}{at} is incomplete (an interrupted download); run "
            "the import again with network access (unset HF_HUB_OFFLINE) to complete it"
        ) from None
    except LocalEntryNotFoundError:
        # Offline (HF_HUB_OFFLINE=1) or no network, and the cache does not hold the snapshot.
        reason = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise ScratchLMError(
            f"{repo_id}{at} is not in the Hugging Face cache and {reason}; download it once "
            "with network access (unset HF_HUB_OFFLINE), point HF_HUB_CACHE at a cache that "
            "holds it, or pass a local model directory"
        ) from None
    except (HfHubHTTPError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ScratchLMError(
            f"cannot download {repo_id}{at} ({type(error).__name__}: {first_line[:200]}); "
            "check the network and the id, or pass a local model directory"
        ) from None
    return Path(folder)


def resolve_model_source(
    model: str | os.PathLike[str], revision: str | None = None
) -> tuple[Path, str]:
    """A local Hugging Face model directory for `model` and where it came from: the path itself
    when it exists, else the downloaded snapshot of the Hub id ORG/NAME ("ORG/NAME@COMMIT": the
    cache names a snapshot folder by its commit)."""
    path = Path(model)
    if path.exists() or not is_repo_id(str(model)):
        if revision is not None:
            raise ScratchLMError(
                f"--revision applies to a Hugging Face Hub id, but {path} is a local path; "
                "drop --revision or pass ORG/NAME"
            )
        return path, str(path)
    snapshot = download_model(str(model), revision)
    return snapshot, f"{model}@{snapshot.name}"


def require_token() -> str:
    """The Hub token (HF_TOKEN or `hf auth login`): checked before an export starts, so a push
    that cannot happen costs no export."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ScratchLMError(
            "--push-to-hub needs a Hugging Face token with write access; run `hf auth login` "
            "or set HF_TOKEN, then export again"
        )
    return token


class HubApi(Protocol):
    """The two calls of `huggingface_hub.HfApi` that a push makes."""

    def create_repo(self, repo_id: str, *, private: bool, exist_ok: bool) -> Any: ...

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | Path,
        allow_patterns: list[str],
        commit_message: str,
    ) -> Any: ...


def hub_api(token: str) -> HubApi:
    """The real client (tests replace this function: there is no Hub to talk to offline)."""
    from huggingface_hub import HfApi

    api: HubApi = HfApi(token=token)
    return api


def push_export(
    folder: Path, repo_id: str, *, private: bool = False, api: HubApi
) -> tuple[str, list[str]]:
    """Create `repo_id` (kept if it exists) and upload the files of the export `folder`, by name
    (nothing else that may lie there later); returns the model page and the uploaded names."""
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(repo_id, "--push-to-hub")
    files = sorted(child.name for child in folder.iterdir() if child.is_file())
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            allow_patterns=files,
            commit_message="Upload model exported by scratchlm",
        )
    except (HfHubHTTPError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ScratchLMError(
            f"cannot push {folder} to {repo_id} ({type(error).__name__}: {first_line[:200]}); "
            f"the export is complete at {folder}: check the token's write access and the network, "
            "then upload it with `hf upload`"
        ) from None
    return f"https://huggingface.co/{repo_id}", files
