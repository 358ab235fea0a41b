"""What ``load_model`` was given: a GGUF file, a SafeTensors folder, or a hub repository.

The answer is always a local path and its format; hub repositories are downloaded into the
Hugging Face cache first (:mod:`.hub_download`).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from pathlib import Path
from typing import Optional, Union

from .errors import InvalidRequestError, ModelFormatError, ModelNotFoundError
from .hub_settings import HubSettings, ProgressCallback

__all__ = ["LocatedModel", "ModelFormat", "locate_model", "locate_tokenizer"]

# namespace/name, as the hub spells repository ids.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.\-]{0,95}/[\w][\w.\-]{0,95}")
# What a SafeTensors model needs from its repository (top-level files only).
_FOLDER_SUFFIXES = (".json", ".safetensors", ".jinja")


class ModelFormat(str, enum.Enum):
    GGUF = "gguf"
    SAFETENSORS = "safetensors"


@dataclasses.dataclass(frozen=True)
class LocatedModel:
    path: Path
    format: ModelFormat


def _is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.fullmatch(text)) and not text.endswith((".gguf", ".safetensors")) and ".." not in text


def _pick_gguf(where: str, ggufs: list[str]) -> str:
    if len(ggufs) == 1:
        return ggufs[0]
    raise InvalidRequestError(
        f"{where} holds {len(ggufs)} GGUF files; choose one with filename=: " + ", ".join(repr(g) for g in ggufs)
    )


def _local(path: Path, filename: Optional[str]) -> LocatedModel:
    if path.is_file():
        if filename is not None:
            raise InvalidRequestError(f"filename= picks a file in a folder or hub repository; {path} is a file")
        return LocatedModel(path, ModelFormat.GGUF)
    if filename is not None:
        chosen = path / filename
        if not chosen.is_file():
            raise ModelNotFoundError(f"no file {filename!r} in {path}")
        return LocatedModel(chosen, ModelFormat.GGUF)
    if (path / "config.json").is_file() or (path / "params.json").is_file():  # params.json: Mistral-native
        return LocatedModel(path, ModelFormat.SAFETENSORS)
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if ggufs:
        return LocatedModel(path / _pick_gguf(f"folder {path}", ggufs), ModelFormat.GGUF)
    # Neither: the folder loader's message names everything a SafeTensors folder needs.
    return LocatedModel(path, ModelFormat.SAFETENSORS)


def _from_hub(
    repo: str, filename: Optional[str], revision: str, on_progress: Optional[ProgressCallback]
) -> LocatedModel:
    from .hub_download import download, repo_files  # huggingface_hub takes 0.15 s to import

    settings = HubSettings.from_environment()
    files = repo_files(repo, revision, settings)
    where = f"repository {repo!r} (revision {revision!r})"
    if filename is not None:
        if filename not in files:
            ggufs = [f for f in files if f.endswith(".gguf")]
            listing = ", ".join(repr(g) for g in ggufs) if ggufs else "no GGUF files"
            raise ModelNotFoundError(f"file {filename!r} is not in {where} on {settings.endpoint}; it has {listing}")
        (path,) = download(repo, revision, [filename], settings, on_progress)
        return LocatedModel(path, ModelFormat.GGUF)
    top_level = [f for f in files if "/" not in f]
    described = "config.json" in top_level or "params.json" in top_level
    if described and any(f.endswith(".safetensors") for f in top_level):
        wanted = [f for f in top_level if f.endswith(_FOLDER_SUFFIXES)]
        paths = download(repo, revision, wanted, settings, on_progress)
        return LocatedModel(paths[0].parent, ModelFormat.SAFETENSORS)
    ggufs = [f for f in files if f.endswith(".gguf")]
    if ggufs:
        (path,) = download(repo, revision, [_pick_gguf(where, ggufs)], settings, on_progress)
        return LocatedModel(path, ModelFormat.GGUF)
    raise ModelFormatError(
        f"{where} has neither a SafeTensors model (config.json and *.safetensors) nor a GGUF file; "
        f"it has: {', '.join(files) or 'no files'}"
    )


def locate_model(
    model: Union[str, os.PathLike[str]],
    *,
    filename: Optional[str] = None,
    revision: Optional[str] = None,
    on_progress: Optional[ProgressCallback] = None,
) -> LocatedModel:
    """A local path wins; otherwise ``namespace/name`` is a hub repository."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            raise InvalidRequestError(f"revision= applies to hub repositories; {path} is a local path")
        return _local(path, filename)
    if not _is_repo_id(text):
        raise ModelNotFoundError(
            f"no model at {path}: check the path, or give a Hugging Face repository id such as 'google/gemma-3-270m'"
        )
    try:
        return _from_hub(text, filename, revision or "main", on_progress)
    except ModelNotFoundError as e:
        raise ModelNotFoundError(f"{e} (there is no local path {text!r} either)") from None


def locate_tokenizer(tokenizer: Union[str, os.PathLike[str]]) -> Path:
    """A ``tokenizer.json``: the file, the one in a folder, or the one in a hub repository."""
    text = os.fspath(tokenizer)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.exists() or not _is_repo_id(text):
        if not path.is_file():
            raise ModelNotFoundError(f"tokenizer file {path} does not exist")
        return path
    from .hub_download import download

    settings = HubSettings.from_environment()
    (local,) = download(text, "main", ["tokenizer.json"], settings)
    return local
