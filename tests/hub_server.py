"""A Hugging Face-compatible hub on 127.0.0.1, for tests (no real hub is reachable here).

It serves what hub clients use: ``GET /api/models/{repo}[/revision/{rev}]`` (``sha``,
``siblings``) and ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` with the commit and ETag headers
(``X-Repo-Commit``, ``ETag``, and for large files ``X-Linked-Etag``/``X-Linked-Size`` carrying the
sha256), range requests, and the hub's error codes (``X-Error-Code``). A private repository
answers like the hub does without a valid token: 401, ``RepoNotFound``. Faults for tests: cut a
download short and then fail, or serve corrupt bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Union

FileSource = Union[bytes, Path]
_CHUNK = 1 << 20
_LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")


@dataclasses.dataclass
class _File:
    source: FileSource
    size: int
    etag: str  # sha256 for large (LFS) files, a git blob id for small ones
    lfs: bool

    def read(self, start: int, end: int) -> bytes:
        if isinstance(self.source, bytes):
            return self.source[start:end]
        with open(self.source, "rb") as f:
            f.seek(start)
            return f.read(end - start)


def _describe(source: FileSource, name: str) -> _File:
    lfs = name.endswith(_LFS_SUFFIXES)
    if isinstance(source, Path):
        size = source.stat().st_size
        digest = hashlib.sha256() if lfs else hashlib.sha1(f"blob {size}\0".encode())
        with open(source, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    else:
        size = len(source)
        digest = hashlib.sha256(source) if lfs else hashlib.sha1(f"blob {size}\0".encode() + source)
    return _File(source, size, digest.hexdigest(), lfs)


@dataclasses.dataclass
class _Repo:
    commit: str
    files: dict[str, _File]
    token: Optional[str]


@dataclasses.dataclass
class Request:
    method: str
    path: str
    authorized: bool
    range: Optional[str]


class LoopbackHub:
    """Start with ``with LoopbackHub() as hub:``; point ``HF_ENDPOINT`` at ``hub.url``."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.requests: list[Request] = []
        self.corrupt: set[str] = set()
        self._cut: dict[str, int] = {}  # file name -> bytes to send before the connection drops
        self._down: set[str] = set()  # files answering 503 after a cut
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def add_repo(self, repo: str, files: dict[str, FileSource], *, token: Optional[str] = None) -> str:
        """Adds a repository at one commit; returns the commit id."""
        described = {name: _describe(source, name) for name, source in files.items()}
        commit = hashlib.sha1(json.dumps(sorted((n, f.etag) for n, f in described.items())).encode()).hexdigest()
        self.repos[repo] = _Repo(commit, described, token)
        return commit

    def cut_download(self, filename: str, after_bytes: int) -> None:
        """The next download of ``filename`` stops after ``after_bytes``; the file then answers
        503 until :meth:`heal`."""
        self._cut[filename] = after_bytes

    def heal(self) -> None:
        self._cut.clear()
        self._down.clear()
        self.corrupt.clear()

    def downloads(self, filename: str) -> list[Request]:
        """The GET requests for ``filename``'s content."""
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + filename)]

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> LoopbackHub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __exit__(self, *exc: object) -> None:
        self.stop()


_MODEL_INFO = re.compile(r"/api/models/([^/]+/[^/]+?)(?:/revision/([^/]+))?/?")
_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _Handler(BaseHTTPRequestHandler):
    owner: LoopbackHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _repo(self, repo_id: str, revision: str) -> Optional[_Repo]:
        repo = self.owner.repos.get(repo_id)
        auth = self.headers.get("Authorization")
        if repo is None or (repo.token is not None and auth != f"Bearer {repo.token}"):
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo

    def do_HEAD(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        path = self.path.split("?", 1)[0]
        self.owner.requests.append(
            Request(self.command, path, "Authorization" in self.headers, self.headers.get("Range"))
        )
        if m := _MODEL_INFO.fullmatch(path):
            self._model_info(m.group(1), m.group(2) or "main")
        elif m := _RESOLVE.fullmatch(path):
            self._resolve(m.group(1), m.group(2), m.group(3))
        else:
            self._error(404, "NotFound", f"no route {path}")

    def _model_info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        body = json.dumps(
            {
                "_id": repo.commit[:24],
                "id": repo_id,
                "modelId": repo_id,
                "sha": repo.commit,
                "private": repo.token is not None,
                "siblings": [{"rfilename": name} for name in sorted(repo.files)],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        file = repo.files.get(filename)
        if file is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}")
            return
        owner = self.owner
        if self.command == "GET" and filename in owner._down:
            self._error(503, "ServiceUnavailable", "the server is down for a test")
            return
        start, end = 0, file.size
        if (wanted := self.headers.get("Range")) and (m := _RANGE.fullmatch(wanted)):
            start = int(m.group(1))
            end = min(int(m.group(2)) + 1, file.size) if m.group(2) else file.size
        self.send_response(206 if (start, end) != (0, file.size) else 200)
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("ETag", f'"{file.etag}"')
        if file.lfs:
            self.send_header("X-Linked-Etag", f'"{file.etag}"')
            self.send_header("X-Linked-Size", str(file.size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if (start, end) != (0, file.size):
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{file.size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with owner._lock:
            cut = owner._cut.pop(filename, None)
            if cut is not None:
                owner._down.add(filename)
        stop = end if cut is None else min(end, start + cut)
        position = start
        while position < stop:
            chunk = file.read(position, min(stop, position + _CHUNK))
            if filename in owner.corrupt:
                chunk = bytes(b ^ 0x5A for b in chunk)
            self.wfile.write(chunk)
            position += len(chunk)
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
