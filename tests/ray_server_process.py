"""A real `pcai-inference serve --ray` process (a local Ray instance) on 127.0.0.1, for the Ray
Serve tests and bench/ray_serve.py: its log in a file, its Ray processes found by an environment
mark they all inherit, each response's replica from its headers."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from server_process import ServerProcess

REPLICA = "x-pcai-replica"
"""Names the replica that served a response (pcai_inference.ray.REPLICA_HEADER)."""
REPLICA_PID = "x-pcai-replica-pid"
"""The replica's process id (pcai_inference.ray.REPLICA_PID_HEADER)."""
RUN_MARK = "PCAI_RAY_TEST_RUN"
"""An environment variable every process of the Ray instance inherits: finds them in /proc."""


@dataclass
class RayServerProcess(ServerProcess):
    """`python -m pcai_inference serve --ray ARGS`; its log goes to a file (Ray writes a lot)."""

    log_path: Optional[Path] = None
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)
    startup_s: float = 0.0

    def start(self, timeout: float = 240) -> RayServerProcess:
        assert self.log_path is not None
        env = {**os.environ, RUN_MARK: self.mark}
        env.pop("PCAI_API_KEY", None)
        if self.api_key is not None:
            env["PCAI_API_KEY"] = self.api_key
        cmd = [sys.executable, "-m", "pcai_inference", "serve", "--ray", "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port)]
        started = time.monotonic()
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([*cmd, *self.args], env=env, stdout=subprocess.DEVNULL, stderr=log)
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log()}")
            try:
                # Ready once every replica is (the CLI says so), not at the first one's answer.
                if "pcai-inference: serving on" in self.log() and self.request("GET", "/health", timeout=5)[0] == 200:
                    self.startup_s = time.monotonic() - started
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not become ready in {timeout} s: {self.log()}")

    def close(self) -> None:
        """Stops the CLI if it still runs, then anything left of its Ray instance (after a
        failure: nothing of it may outlive the tests)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop(timeout=90)
        for pid in self.ray_processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text(errors="replace")

    def ray_processes(self) -> list[int]:
        """Processes of this Ray instance still running (zombies have no environment to read)."""
        needle = f"{RUN_MARK}={self.mark}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def get(self, path: str) -> tuple[int, dict[str, str], Any]:
        """A GET's status, headers (lower-case names) and JSON body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers=self.headers())
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
        finally:
            conn.close()

    def startup_figures(self) -> tuple[float, float]:
        """Seconds the CLI took to start Ray (and Serve's proxy), then to have every replica ready."""
        took = re.search(r"ray started in ([\d.]+) s, replicas ready ([\d.]+) s later", self.log())
        assert took is not None, self.log()
        return float(took[1]), float(took[2])


def rss_mib(pid: int) -> float:
    """A process's resident memory (Linux: /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")
