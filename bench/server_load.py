"""Load on the OpenAI-compatible server: N concurrent `openai` clients streaming, every K-th of
them disconnecting mid-stream. Loopback only, bounded in count and time.

    python bench/server_load.py                     # starts a server with the default model
    python bench/server_load.py --clients 64 --max-tokens 64

Prints requests/s, generated tokens/s and latency percentiles as JSON. tests/test_server_load.py
runs the same load and checks what every client got.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import openai

PROMPTS = [
    "A short story about a lighthouse keeper:",
    "The three laws of thermodynamics are",
    "Here is a recipe for vegetable soup.",
    "import numpy as np\n\ndef normalize(x):",
    "The tallest mountains in Europe are",
    "Dear team, this week we shipped",
    "The first computers were built to",
    "Photosynthesis converts sunlight into",
]


@dataclass
class ClientResult:
    prompt: str
    disconnected: bool
    text: str = ""
    finish_reason: Optional[str] = None
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float = 0.0
    error: Optional[str] = None


@dataclass
class LoadReport:
    clients: int
    disconnected: int
    completed: int
    failed: int
    wall_seconds: float
    requests_per_second: float
    tokens_per_second: float
    latency_p50_s: float
    latency_p99_s: float
    first_token_p50_s: float
    first_token_p99_s: float
    results: list[ClientResult] = field(default_factory=list, repr=False)

    def figures(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("results")
        return d


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def one_client(client: openai.OpenAI, model: str, prompt: str, max_tokens: int, disconnect: bool) -> ClientResult:
    """Streams one completion; a disconnecting client closes its stream after two text chunks."""
    result = ClientResult(prompt, disconnect)
    started = time.monotonic()
    try:
        stream = client.completions.create(
            model=model,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = 0
        for chunk in stream:
            if chunk.choices:
                if chunk.choices[0].text and not result.first_token_seconds:
                    result.first_token_seconds = time.monotonic() - started
                result.text += chunk.choices[0].text
                chunks += 1
                if chunk.choices[0].finish_reason:
                    result.finish_reason = chunk.choices[0].finish_reason
            if chunk.usage is not None:
                result.completion_tokens = chunk.usage.completion_tokens
            if disconnect and chunks >= 2:
                stream.close()
                break
    except openai.OpenAIError as e:
        result.error = f"{type(e).__name__}: {e}"
    result.seconds = time.monotonic() - started
    return result


def run_load(
    base_url: str,
    api_key: str,
    clients: int = 32,
    disconnect_every: int = 3,
    max_tokens: int = 32,
    timeout_s: float = 300,
) -> LoadReport:
    """`clients` concurrent streaming clients; every `disconnect_every`-th one leaves early."""
    with openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s) as client:
        return _run_load(client, clients, disconnect_every, max_tokens)


def _run_load(client: openai.OpenAI, clients: int, disconnect_every: int, max_tokens: int) -> LoadReport:
    model = client.models.list().data[0].id
    jobs = [(PROMPTS[i % len(PROMPTS)], i % disconnect_every == disconnect_every - 1) for i in range(clients)]
    barrier = threading.Barrier(clients)

    def go(job: tuple[str, bool]) -> ClientResult:
        barrier.wait(timeout=60)
        return one_client(client, model, job[0], max_tokens, job[1])

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(go, jobs))
    wall = time.monotonic() - started
    done = [r for r in results if not r.disconnected and r.error is None]
    latencies = sorted(r.seconds for r in done)
    firsts = sorted(r.first_token_seconds for r in done)
    return LoadReport(
        clients=clients,
        disconnected=sum(r.disconnected for r in results),
        completed=len(done),
        failed=sum(r.error is not None for r in results),
        wall_seconds=wall,
        requests_per_second=len(done) / wall,
        tokens_per_second=sum(r.completion_tokens for r in done) / wall,
        latency_p50_s=_percentile(latencies, 50),
        latency_p99_s=_percentile(latencies, 99),
        first_token_p50_s=_percentile(firsts, 50),
        first_token_p99_s=_percentile(firsts, 99),
        results=results,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--disconnect-every", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from server_process import ServerProcess

    server = ServerProcess(["--max-batch", str(args.max_batch), "--max-queue", "256"], api_key="bench").start()
    try:
        rss_before = server.rss_mib()
        report = run_load(server.base_url, "bench", args.clients, args.disconnect_every, args.max_tokens)
        server.wait_idle(30)
        figures = {**report.figures(), "rss_before_mib": rss_before, "rss_after_mib": server.rss_mib()}
    finally:
        server.stop()
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
