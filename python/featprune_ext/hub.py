"""A model named by a local directory or by a Hugging Face hub id.

`resolve_model("path/to/model")` returns an existing directory as is. `resolve_model("ORG/NAME")`
(or `ORG/NAME@REVISION`, a branch, tag or commit) returns the model's snapshot folder in the Hugging
Face cache. A cached snapshot that holds what a run reads is used without touching the network;
otherwise, unless HF_HUB_OFFLINE is set, only those files are downloaded: config, generation config,
tokenizer, and the safetensors weights the checkpoint loads (the shards its index lists, or its one
file), never other formats or a second copy of the weights (e.g. Mistral's consolidated.safetensors).
The cache is huggingface_hub's own (HF_HOME, HF_HUB_CACHE), so models fetched by transformers or
`hf download` are found there.

huggingface_hub is imported only for a hub id: pruning a local directory never loads it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Optional, Union

from .errors import InputError

__all__ = ["SIDE_FILES", "is_hub_id", "model_label", "resolve_model", "weight_files"]

PathLike = Union[str, os.PathLike]

INDEX_NAME = "model.safetensors.index.json"
# Everything a run reads besides the weights (the engine copies these into the pruned model too).
SIDE_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "spiece.model", "vocab.json",
              "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json", INDEX_NAME]

# ORG/NAME[@REVISION] with the characters the Hub allows; a path starting with / . or ~ never matches
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")


def is_hub_id(spec: PathLike) -> bool:
    """True for 'ORG/NAME' or 'ORG/NAME@REVISION' (which may also name a relative path)."""
    text = os.fspath(spec)
    return isinstance(text, str) and _HUB_ID.fullmatch(text) is not None and ".." not in text


def model_label(spec: PathLike) -> str:
    """A short display name: the directory's name, or NAME (NAME@REVISION) for a hub id."""
    path = Path(spec).expanduser()
    if path.is_dir() or not is_hub_id(spec):
        return path.name
    return os.fspath(spec).split("/", 1)[1]


def resolve_model(spec: PathLike) -> Path:
    """The local folder of the model `spec`: an existing directory, or a hub id's cached (or, when
    online, downloaded) snapshot. A spec that is neither a directory nor a hub id comes back as a
    Path, for the caller's own "does not exist" error. InputError names a hub id that is neither
    cached nor downloadable."""
    path = Path(spec).expanduser()
    if path.is_dir() or not is_hub_id(spec):
        return path
    match = _HUB_ID.fullmatch(os.fspath(spec))
    return _snapshot(os.fspath(spec), match["repo"], match["revision"])


def weight_files(weight_map: Optional[dict], repo_files: Callable[[], list[str]]) -> list[str]:
    """The safetensors files a run loads: the shards an index's weight_map names, else the
    repository's top-level .safetensors files (listed by `repo_files`, called only then)."""
    if weight_map is not None:
        return sorted(set(weight_map.values()))
    return sorted(f for f in repo_files() if "/" not in f and f.endswith(".safetensors"))


def _missing(folder: Path) -> list[str]:
    """What a run needs and `folder` lacks: config.json and the safetensors weights (every shard of
    its index)."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    index = _read_index(folder)
    if index is not None:
        missing += [f for f in weight_files(index, list) if not (folder / f).is_file()]
    elif not any(f.is_file() for f in folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    return missing


def _read_index(folder: Path) -> Optional[dict]:
    """The weight_map of folder's safetensors index, None without one."""
    path = folder / INDEX_NAME
    if not path.is_file():
        return None
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is not a valid safetensors index: {exc}") from None
    if not isinstance(weight_map, dict):
        raise InputError(f"{path} is not a valid safetensors index: weight_map is not an object")
    return weight_map


def _snapshot(spec: str, repo_id: str, revision: Optional[str]) -> Path:
    try:
        import huggingface_hub
    except ImportError:
        raise InputError(f"{spec}: no such local directory; a hub id needs huggingface_hub "
                         "(pip install 'featprune[models]')") from None
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    cache = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
    # The snapshot of this revision is where its cached config.json lies (refs/ resolve a branch or tag).
    config = huggingface_hub.try_to_load_from_cache(repo_id, "config.json", revision=revision)
    cached = Path(config).parent if isinstance(config, str) else None
    if cached is not None and not _missing(cached):
        return cached
    if constants.HF_HUB_OFFLINE:
        state = f"is incomplete in {cache} (no {', '.join(_missing(cached))})" if cached else f"is not in {cache}"
        raise InputError(f"{spec}: no such local directory, and the hub model {state}; HF_HUB_OFFLINE is set, "
                         "so nothing was downloaded (unset it, or download the model first)")
    try:
        folder = _download(huggingface_hub, repo_id, revision)
    except GatedRepoError:
        raise InputError(f"{spec}: the hub model is gated; accept its terms on huggingface.co and log in "
                         "(`hf auth login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise InputError(f"{spec}: no such local directory, and no such model on the Hugging Face hub (or it is "
                         "private: log in with `hf auth login` or HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise InputError(f"{spec}: the hub model has no revision {revision!r}") from None
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 -- no network, a proxy, HTTP errors, a full disk: one message
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{spec}: no such local directory, the hub model is not in {cache}, and downloading it "
                         f"failed: {reason}") from None
    missing = _missing(folder)
    if missing:
        raise InputError(f"{spec}: the hub model has no {', '.join(missing)} (featprune reads config.json and "
                         "safetensors weights)")
    return folder


def _download(huggingface_hub, repo_id: str, revision: Optional[str]) -> Path:
    """The side files first (small), then exactly the weights the index names (or the top-level
    safetensors), both from the same commit."""
    folder = Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=SIDE_FILES))
    commit = folder.name  # snapshots/<commit>: the second call cannot see a branch that moved meanwhile
    weights = weight_files(_read_index(folder),
                           lambda: huggingface_hub.list_repo_files(repo_id, revision=commit))
    if weights:
        folder = Path(huggingface_hub.snapshot_download(repo_id, revision=commit, allow_patterns=weights))
    return folder
