"""Files from a Hugging Face hub repository, through the standard cache.

Downloads go through ``huggingface_hub`` with the endpoint, cache, token and offline mode of
:class:`HubSettings` (the engine's own hub client ignores ``HF_ENDPOINT``), so the engine is
only ever handed local paths. Every freshly downloaded file is checked against the size the hub
announced (by ``huggingface_hub``) and, for large (LFS) files, against the sha256 the hub gives
as its ETag; a file that fails is removed so that no later load trusts it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm import tqdm

from .errors import DownloadError, InvalidRequestError, ModelNotFoundError
from .hub_settings import HubSettings, ProgressCallback

__all__ = ["download", "repo_files"]

# huggingface_hub 2 speaks through httpx2, version 1 through httpx; both raise their own errors.
_http = importlib.import_module("httpx2" if importlib.util.find_spec("httpx2") else "httpx")
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, _http.HTTPError)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _token_hint(settings: HubSettings) -> str:
    if settings.token is None:
        return (
            "If the repository is private or gated, a token is needed: set HF_TOKEN (or run `hf auth login`); "
            "no token is set now."
        )
    return "A token is set (HF_TOKEN or the token file): check that it may read this repository."


@contextlib.contextmanager
def _hub_errors(repo: str, revision: str, filename: Optional[str], settings: HubSettings) -> Iterator[None]:
    """Turns ``huggingface_hub``'s errors into ours, with what to do. Never quotes the token."""
    what = f"{repo!r} (revision {revision!r})" + (f", file {filename!r}" if filename else "")
    try:
        yield
    except HFValidationError as e:
        raise InvalidRequestError(f"{repo!r} is not a valid Hugging Face repository id: {e}") from None
    except GatedRepoError:
        raise ModelNotFoundError(
            f"{what} on {settings.endpoint} is gated: accept its terms on the hub, then set HF_TOKEN. "
            + _token_hint(settings)
        ) from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"revision {revision!r} was not found in {repo!r} on {settings.endpoint}") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"repository {repo!r} (revision {revision!r}) was not found on {settings.endpoint}. "
            + _token_hint(settings)
        ) from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        if settings.offline:
            raise ModelNotFoundError(
                f"{what} is not in the Hugging Face cache at {settings.cache_dir}, and HF_HUB_OFFLINE=1 "
                "forbids downloading it: load it once with the network, or unset HF_HUB_OFFLINE"
            ) from None
        raise DownloadError(
            f"could not download {what} from {settings.endpoint}, and it is not cached: {_cause(e)}"
        ) from None
    except EntryNotFoundError:
        raise ModelNotFoundError(
            f"file {filename!r} was not found in {repo!r} (revision {revision!r}) on {settings.endpoint}"
        ) from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "no"
        raise DownloadError(f"the hub at {settings.endpoint} answered {status} for {what}: {_cause(e)}") from None
    except _NETWORK_ERRORS as e:  # no connection, short downloads ("Consistency check failed"), disk full
        raise DownloadError(f"downloading {what} from {settings.endpoint} failed: {_cause(e)}") from None


def _cause(e: BaseException) -> str:
    """The first line of an error and of its causes; enough to act on, no headers."""
    parts: list[str] = []
    seen: Optional[BaseException] = e
    while seen is not None and len(parts) < 3:
        line = str(seen).strip().splitlines()[0] if str(seen).strip() else type(seen).__name__
        if line not in parts:
            parts.append(line)
        seen = seen.__cause__ or seen.__context__
    return "; ".join(parts)


def repo_files(repo: str, revision: str, settings: HubSettings) -> list[str]:
    """The files of a repository at a revision: asked of the hub, or from the cache when offline."""
    if settings.offline:
        snapshot = _cached_snapshot(repo, revision, settings)
        if snapshot is None:
            raise ModelNotFoundError(
                f"repository {repo!r} (revision {revision!r}) is not in the Hugging Face cache at "
                f"{settings.cache_dir}, and HF_HUB_OFFLINE=1 forbids downloading it: load it once with "
                "the network, or unset HF_HUB_OFFLINE"
            )
        return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    api = HfApi(endpoint=settings.endpoint, token=settings.token or False)
    with _hub_errors(repo, revision, None, settings):
        info = api.model_info(repo, revision=revision)
    return sorted(s.rfilename for s in info.siblings or ())


def _cached_snapshot(repo: str, revision: str, settings: HubSettings) -> Optional[Path]:
    storage = settings.cache_dir / ("models--" + repo.replace("/", "--"))
    commit = revision
    if not _COMMIT.fullmatch(revision):
        try:
            commit = (storage / "refs" / revision).read_text(encoding="utf-8").strip()
        except OSError:
            return None
    snapshot = storage / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


class _Progress:
    """Bytes done over bytes in all, for the callback; a bar on a terminal."""

    def __init__(self, on_progress: Optional[ProgressCallback], show_bar: bool) -> None:
        self.on_progress = on_progress
        self.show_bar = show_bar
        self.done = 0
        self.total = 0

    def report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.done, max(self.total, self.done))

    def bar_class(self) -> type[tqdm]:
        progress = self

        class Bar(tqdm):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["disable"] = not progress.show_bar
                super().__init__(*args, **kwargs)
                progress.done += int(kwargs.get("initial") or 0)
                progress.report()

            def update(self, n: Optional[float] = 1) -> Optional[bool]:
                progress.done += int(n or 0)
                progress.report()
                return super().update(n)  # type: ignore[no-any-return]

        return Bar


def download(
    repo: str,
    revision: str,
    filenames: Sequence[str],
    settings: HubSettings,
    on_progress: Optional[ProgressCallback] = None,
) -> list[Path]:
    """Local paths of ``filenames`` (in the cache's snapshot folder), downloading what is missing."""
    cache = str(settings.cache_dir)
    missing = [f for f in filenames if not isinstance(try_to_load_from_cache(repo, f, cache, revision), str)]
    show_bar = settings.show_progress and sys.stderr is not None and sys.stderr.isatty()
    progress = _Progress(on_progress, show_bar)
    if missing and not settings.offline:
        progress.total = sum(_remote_size(repo, revision, f, settings) for f in missing)
        progress.report()
    paths = []
    for filename in filenames:
        with _hub_errors(repo, revision, filename, settings):
            local = hf_hub_download(
                repo,
                filename,
                revision=revision,
                cache_dir=cache,
                endpoint=settings.endpoint,
                token=settings.token or False,
                local_files_only=settings.offline,
                tqdm_class=progress.bar_class(),
            )
        assert isinstance(local, str)
        if filename in missing:
            _check_sha256(Path(local), repo, revision, filename, settings)
        paths.append(Path(local))
    if missing:
        progress.done = progress.total = max(progress.done, progress.total)
        progress.report()
    return paths


def _remote_size(repo: str, revision: str, filename: str, settings: HubSettings) -> int:
    url = hf_hub_url(repo, filename, revision=revision, endpoint=settings.endpoint)
    with _hub_errors(repo, revision, filename, settings):
        return get_hf_file_metadata(url, token=settings.token or False, endpoint=settings.endpoint).size or 0


def _check_sha256(local: Path, repo: str, revision: str, filename: str, settings: HubSettings) -> None:
    """A fresh LFS blob is named by its sha256 (the hub's ETag): hash it and compare."""
    blob = local.resolve()
    if not _SHA256.fullmatch(blob.name):
        return
    digest = hashlib.sha256()
    with open(blob, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() == blob.name:
        return
    for path in (local, blob):
        with contextlib.suppress(OSError):
            path.unlink()
    raise DownloadError(
        f"the download of {filename!r} from {repo!r} (revision {revision!r}, {settings.endpoint}) is corrupt: "
        f"its sha256 is {digest.hexdigest()}, the hub said {blob.name}. It was removed; load again to retry"
    )
