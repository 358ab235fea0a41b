"""The server on Ray Serve against the plain server: throughput with 1 and 2 replicas, start-up
time, memory per replica. Loopback only, a local Ray instance per run, bounded in count and time.

    python bench/ray_serve.py                       # 16 streaming clients, 32 tokens each
    python bench/ray_serve.py --clients 32 --replicas 1 2 4 --out ray.json

Each configuration starts its own server (`pcai-inference serve`, then `serve --ray --replicas
N`), runs bench/server_load.py's load once to warm up and once measured, and reports requests/s,
generated tokens/s, start-up seconds and resident memory (replicas, Serve's proxy and
controller, every process of the Ray instance) as JSON. On one machine the replicas share its
cores: more replicas add memory, not speed, unless the machine has cores to spare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ray_server_process import REPLICA, REPLICA_PID, RayServerProcess, rss_mib
from server_load import run_load
from server_process import ServerProcess

KEY = "bench"


def _load(base_url: str, clients: int, max_tokens: int) -> dict[str, Any]:
    run_load(base_url, KEY, clients=clients, disconnect_every=clients + 1, max_tokens=max_tokens)  # warm-up
    report = run_load(base_url, KEY, clients=clients, disconnect_every=clients + 1, max_tokens=max_tokens)
    if report.failed or report.completed != clients:
        raise RuntimeError(f"the load failed: {[r.error for r in report.results if r.error][:3]}")
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in report.figures().items()}


def plain(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    server = ServerProcess(["--max-batch", str(args.max_batch), "--max-queue", "256"], api_key=KEY).start()
    try:
        startup = time.monotonic() - started
        load = _load(server.base_url, args.clients, args.max_tokens)
        return {"server": "plain", "startup_s": round(startup, 2), "rss_mib": round(server.rss_mib()), **load}
    finally:
        server.stop()


def on_ray(args: argparse.Namespace, replicas: int, log: Path) -> dict[str, Any]:
    flags = ["--replicas", str(replicas), "--max-batch", str(args.max_batch), "--max-queue", "256"]
    server = RayServerProcess(flags, api_key=KEY, log_path=log)
    try:
        server.start()
        ray_s, replicas_s = server.startup_figures()
        load = _load(server.base_url, args.clients, args.max_tokens)
        pids: dict[str, int] = {}
        for _ in range(10 * replicas):
            headers = server.get("/health")[1]
            pids[headers[REPLICA]] = int(headers[REPLICA_PID])
        everything = {pid: _name(pid) for pid in server.ray_processes()}

        def named(name: str) -> int:
            return round(rss_mib(next(pid for pid, n in everything.items() if n == name)))

        return {
            "server": f"ray, {replicas} replica(s)",
            "startup_s": round(server.startup_s, 2),
            "ray_start_s": ray_s,
            "replicas_ready_s": replicas_s,
            "replica_rss_mib": sorted(round(rss_mib(pid)) for pid in pids.values()),
            "proxy_rss_mib": named("ray::ProxyActor"),
            "controller_rss_mib": named("ray::ServeController"),
            "ray_processes": len(everything),
            "ray_total_rss_mib": round(sum(rss_mib(pid) for pid in everything)),
            **load,
        }
    finally:
        server.close()


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--log", type=Path, help="keep the Ray server's log here (default: a temporary file)")
    ap.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    log = args.log or Path(tempfile.mkdtemp(prefix="pcai-ray-bench-")) / "serve.log"
    figures = [plain(args)] + [on_ray(args, n, log) for n in args.replicas]
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
