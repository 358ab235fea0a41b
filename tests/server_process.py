"""A real `pcai-inference serve` process on 127.0.0.1 for the server tests, and raw HTTP helpers
(for what the `openai` client hides: status lines, SSE framing, disconnects)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """`python -m pcai_inference.server ARGS` on a free loopback port; stopped by `stop()`."""

    args: list[str] = field(default_factory=list)
    api_key: Optional[str] = None
    port: int = field(default_factory=free_port)
    process: Optional[subprocess.Popen[str]] = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120) -> ServerProcess:
        env = dict(os.environ)
        env.pop("PCAI_API_KEY", None)
        if self.api_key is not None:
            env["PCAI_API_KEY"] = self.api_key
        cmd = [sys.executable, "-m", "pcai_inference.server", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*cmd, *self.args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                assert self.process.stderr is not None
                with self.process.stderr as err:
                    raise RuntimeError(f"the server exited with {self.process.returncode}: {err.read()}")
            try:
                status, _ = self.request("GET", "/health", timeout=5)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not become ready")

    def headers(self, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key is not None:
            h["Authorization"] = f"Bearer {self.api_key}"
        h.update(extra or {})
        return h

    def request(
        self, method: str, path: str, body: Any = None, headers: Optional[dict[str, str]] = None, timeout: float = 120
    ) -> tuple[int, Any]:
        """One request; the status and the decoded JSON body (or the raw text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=self.headers(headers))
            resp = conn.getresponse()
            raw = resp.read().decode()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        status, body = self.request("GET", "/health")
        assert status == 200, body
        assert isinstance(body, dict)
        return body

    def wait_idle(self, timeout: float) -> float:
        """Seconds until the server holds no generation (raises after `timeout`)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.health()["in_flight"] == 0:
                return time.monotonic() - started
            time.sleep(0.02)
        raise AssertionError(f"the server still holds generations after {timeout} s: {self.health()}")

    def rss_mib(self) -> float:
        """The server's resident memory (Linux: /proc)."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Stops the server (SIGTERM: graceful) and returns its exit status; 0 where it stopped
        gracefully, or on Windows, which has no SIGTERM to send (the process is terminated)."""
        assert self.process is not None
        try:
            if sys.platform == "win32":
                self.process.terminate()
                self.process.wait(timeout)
                return 0
            if self.process.poll() is None:
                self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        finally:
            if self.process.stderr is not None:
                self.process.stderr.close()


def sse_events(server: ServerProcess, path: str, body: dict[str, Any]) -> tuple[int, list[str]]:
    """A streaming request's status and its SSE `data:` payloads, in order, `[DONE]` included."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=server.headers())
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, [resp.read().decode()]
        assert resp.getheader("Content-Type", "").startswith("text/event-stream")
        events = []
        for line in resp.read().decode().split("\n"):
            if line.startswith("data: "):
                events.append(line[len("data: ") :])
            else:
                assert line == "", f"not SSE: {line!r}"
        return resp.status, events
    finally:
        conn.close()


def open_stream(server: ServerProcess, path: str, body: dict[str, Any]) -> tuple[socket.socket, bytes]:
    """Starts a streaming request on a raw socket and reads until the first content arrives; the
    caller closes the socket to disconnect mid-stream."""
    data = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in server.headers().items()]
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    received = b""
    while received.count(b"data: ") < 3:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return sock, received
