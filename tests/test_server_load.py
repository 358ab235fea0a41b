"""Load on the server (loopback only, bounded): 32 concurrent streaming clients, a third of them
disconnecting mid-stream. Every other client gets exactly its solo text, `/health` answers
throughout, and afterwards the server's memory is back near where it started and it still
answers. The figures (requests/s, tokens/s, latency) are printed; bench/server_load.py reports
them for the benchmark."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import openai
import pytest
from server_process import ServerProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from server_load import PROMPTS, run_load

KEY = "load-key"
MAX_TOKENS = 32


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    s = ServerProcess(["--max-batch", "8", "--max-queue", "64"], api_key=KEY).start()
    yield s
    assert s.stop() == 0


@pytest.mark.skipif(sys.platform != "linux", reason="reads the server's memory from /proc")
def test_32_streaming_clients_a_third_disconnecting(server: ServerProcess, request: pytest.FixtureRequest) -> None:
    client = openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
    request.addfinalizer(client.close)
    model = client.models.list().data[0].id
    solo = {
        p: client.completions.create(model=model, prompt=p, max_tokens=MAX_TOKENS, temperature=0.0).choices[0].text
        for p in PROMPTS
    }
    rss_before = server.rss_mib()

    health: list[tuple[float, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            started = time.monotonic()
            status, _ = server.request("GET", "/health", timeout=10)
            health.append((time.monotonic() - started, status))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        report = run_load(server.base_url, KEY, clients=32, disconnect_every=3, max_tokens=MAX_TOKENS, timeout_s=240)
    finally:
        stop.set()
        watcher.join()

    assert report.failed == 0, [r.error for r in report.results if r.error]
    assert report.disconnected == 10 and report.completed == 22
    for r in report.results:
        if not r.disconnected:
            assert r.text == solo[r.prompt], r.prompt
            assert r.finish_reason is not None
        else:
            assert solo[r.prompt].startswith(r.text)
    assert health and all(status == 200 for _, status in health)
    assert max(seconds for seconds, _ in health) < 2.0, max(health)

    idle_after = server.wait_idle(30)
    rss_after = server.rss_mib()
    print(
        f"\nload: {report.figures()}\nhealth answered {len(health)} times, slowest "
        f"{max(s for s, _ in health) * 1000:.0f} ms; idle {idle_after:.2f} s after; "
        f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
    )
    assert rss_after - rss_before < 200, (rss_before, rss_after)
    again = client.completions.create(model=model, prompt=PROMPTS[0], max_tokens=MAX_TOKENS, temperature=0.0)
    assert again.choices[0].text == solo[PROMPTS[0]]
