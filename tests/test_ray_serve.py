"""The server on Ray Serve (`pcai-inference serve --ray`), on a local Ray instance this module
starts through the CLI with 2 replicas of the default model; clients call it on 127.0.0.1 with
the real `openai` client. Concurrent clients get their solo text (the Python API's greedy
output) from both replicas; a disconnect cancels the generation on its replica; a replica killed
mid-run is replaced while its requests fail with OpenAI-shaped errors; SIGTERM leaves no Ray
process behind. `pytest -m "not ray"` deselects these tests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import openai
import pytest
from ray_server_process import REPLICA, REPLICA_PID, RayServerProcess
from server_process import open_stream

from pcai_inference import InferenceBackend
from pcai_inference.errors import InvalidRequestError

from conftest import PROMPTS

pytestmark = [
    pytest.mark.ray,
    pytest.mark.timeout(240),  # each test, with the module's start of Ray (about 10 s) in the first
    pytest.mark.skipif(sys.platform != "linux", reason="Ray Serve is tested on Linux (/proc finds Ray's processes)"),
]

KEY = "ray-test-key"
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServerProcess]:
    log = tmp_path_factory.mktemp("ray") / "serve.log"
    args = ["--replicas", "2", "--max-batch", "8", "--max-queue", "16", "--shutdown-grace", "10"]
    s = RayServerProcess(args, api_key=KEY, log_path=log)
    try:
        s.start()
        ray_s, replicas_s = s.startup_figures()
        print(
            f"\nray serve: ready {s.startup_s:.1f} s after the CLI started (Ray {ray_s} s, 2 replicas {replicas_s} s)"
        )
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def client(ray_server: RayServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=KEY, base_url=ray_server.base_url, max_retries=0, timeout=120) as c:
        yield c


KINDS = ("completion", "completion-stream", "chat", "chat-stream")


@dataclass
class Answer:
    text: str
    replica: str
    pid: int


def ask(client: openai.OpenAI, prompt: str, kind: str, max_tokens: int = MAX_TOKENS) -> Answer:
    """One request of `kind`; its text and the replica that served it."""
    params: dict[str, Any] = dict(model="gemma-3-270m-q4_k_m", max_tokens=max_tokens, temperature=0.0)
    stream = kind.endswith("-stream")
    if kind.startswith("chat"):
        raw: Any = client.chat.completions.with_raw_response.create(
            messages=[{"role": "user", "content": prompt}], stream=stream, **params
        )
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        else:
            text = raw.parse().choices[0].message.content
    else:
        raw = client.completions.with_raw_response.create(prompt=prompt, stream=stream, **params)
        text = "".join(c.choices[0].text for c in raw.parse() if c.choices) if stream else raw.parse().choices[0].text
    return Answer(text, raw.headers[REPLICA], int(raw.headers[REPLICA_PID]))


def solo_text(backend: InferenceBackend, prompt: str, kind: str, max_tokens: int = MAX_TOKENS) -> str:
    if kind.startswith("chat"):
        return backend.chat([{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0).text
    return backend.generate(prompt, max_tokens=max_tokens, temperature=0.0).text


def shape(body: Any) -> dict[str, Any]:
    """An OpenAI error object (the `error` member of a body, or an error event)."""
    error = body["error"] if isinstance(body, dict) and set(body) == {"error"} else body
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_the_same_routes_and_key_through_serve(ray_server: RayServerProcess, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["gemma-3-270m-q4_k_m"]
    status, body = ray_server.request("POST", "/tokenize", {"prompt": "Hello"})
    assert status == 200 and body["count"] == len(body["tokens"]) > 0
    status, body = ray_server.request("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and shape(body)["code"] == "invalid_api_key"
    status, headers, body = ray_server.get("/health")
    assert status == 200 and body["status"] == "ok"
    assert headers[REPLICA] and int(headers[REPLICA_PID]) > 0


def test_16_concurrent_clients_get_their_solo_text_from_both_replicas(
    client: openai.OpenAI, backend: InferenceBackend
) -> None:
    # Each prompt twice, as two of the four kinds (completion or chat, streamed or not).
    jobs = [(PROMPTS[i % len(PROMPTS)], KINDS[(i + i // len(PROMPTS)) % len(KINDS)]) for i in range(16)]
    assert len(set(jobs)) == 16
    solo = {job: solo_text(backend, *job) for job in jobs}  # streamed or not: the same text expected
    barrier = threading.Barrier(len(jobs))

    def go(job: tuple[str, str]) -> Answer:
        barrier.wait(timeout=60)
        return ask(client, *job)

    started = time.monotonic()
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(go, jobs))
    took = time.monotonic() - started
    for job, answer in zip(jobs, answers, strict=True):
        assert answer.text == solo[job], job
    served = {a.replica for a in answers}
    print(f"\n16 requests in {took:.1f} s; per replica: { {r: sum(a.replica == r for a in answers) for r in served} }")
    assert len(served) == 2, served
    assert len({a.pid for a in answers}) == 2


LONG = {"prompt": PROMPTS[0], "max_tokens": 3000, "temperature": 0.8, "seed": 1}


def wait_replicas_idle(server: RayServerProcess, replicas: set[str], timeout: float) -> float:
    """Seconds until each of `replicas` has answered `/health` with nothing in flight."""
    started, idle = time.monotonic(), set()
    while time.monotonic() - started < timeout:
        _, headers, body = server.get("/health")
        if body["in_flight"] == 0:
            idle.add(headers[REPLICA])
        if replicas <= idle:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"replicas {replicas - idle} still hold generations after {timeout} s")


def test_a_disconnect_cancels_the_generation_on_its_replica(ray_server: RayServerProcess) -> None:
    # Streaming: the replica is in the response headers.
    sock, received = open_stream(ray_server, "/v1/completions", {**LONG, "stream": True})
    assert b"200 OK" in received
    found = re.search(rb"x-pcai-replica: (\S+)", received, re.IGNORECASE)
    assert found is not None, received
    sock.close()
    # 3,000 tokens take minutes here: the generation was stopped, not finished.
    assert wait_replicas_idle(ray_server, {found[1].decode()}, 10.0) < 10.0

    # Blocking: whichever replica holds it must let it go. (A busy replica gets no /health while
    # the other is idle, so both are named before.)
    replicas = {ray_server.get("/health")[1][REPLICA] for _ in range(40)}
    assert len(replicas) == 2, replicas
    data = json.dumps(LONG).encode()
    head = "\r\n".join(
        ["POST /v1/completions HTTP/1.1", "Host: x", f"Content-Length: {len(data)}"]
        + [f"{k}: {v}" for k, v in ray_server.headers().items()]
    )
    with socket.create_connection(("127.0.0.1", ray_server.port), timeout=30) as blocking:
        blocking.sendall(head.encode() + b"\r\n\r\n" + data)
        time.sleep(1.5)
    assert wait_replicas_idle(ray_server, replicas, 10.0) < 10.0


def test_a_killed_replica_is_replaced_and_its_requests_fail_cleanly(
    ray_server: RayServerProcess, client: openai.OpenAI, backend: InferenceBackend
) -> None:
    max_tokens = 64
    prompts = PROMPTS[:4]
    jobs = [(prompt, kind) for prompt in prompts for kind in ("completion-stream", "completion")]
    solo = {p: solo_text(backend, p, "completion", max_tokens) for p in prompts}  # streamed or not: the same text
    before = {a.replica: a.pid for a in (ask(client, "Hi", "completion", 1) for _ in range(12))}
    assert len(before) == 2, before

    first_chunk: dict[str, str] = {}
    chunk_seen = threading.Event()
    outcomes: list[Any] = [None] * len(jobs)

    def go(i: int) -> None:
        prompt, kind = jobs[i]
        try:
            if kind == "completion":
                outcomes[i] = ask(client, prompt, kind, max_tokens)
                return
            raw = client.completions.with_raw_response.create(
                model="gemma-3-270m-q4_k_m", prompt=prompt, max_tokens=max_tokens, temperature=0.0, stream=True
            )
            replica, text = raw.headers[REPLICA], ""
            for chunk in raw.parse():
                if chunk.choices:
                    text += chunk.choices[0].text
                    first_chunk.setdefault(replica, prompt)
                    chunk_seen.set()
            outcomes[i] = Answer(text, replica, int(raw.headers[REPLICA_PID]))
        except openai.OpenAIError as e:
            outcomes[i] = e

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    assert chunk_seen.wait(60), "no stream started"
    victim = next(iter(first_chunk))
    killed_at = time.monotonic()
    os.kill(before[victim], signal.SIGKILL)
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a request hung after its replica was killed"

    failed = 0
    for job, outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, Answer):
            assert outcome.text == solo[job[0]], job
            continue
        failed += 1
        assert isinstance(outcome, openai.APIError), repr(outcome)
        assert shape(outcome.body)["code"] == "replica_lost", outcome.body
        if isinstance(outcome, openai.APIStatusError):  # failed before its response started
            assert outcome.status_code == 502
    assert failed >= 1, "the killed replica held a stream, which must fail"

    # The other replica answers meanwhile; Ray starts a new one in place of the killed one.
    for prompt in prompts:
        assert ask(client, prompt, "completion", max_tokens).text == solo[prompt]
    replaced = None
    while replaced is None and time.monotonic() - killed_at < 120:
        answer = ask(client, "Hi", "completion", 1)
        replaced = answer if answer.replica not in before else None
        time.sleep(0.2)
    assert replaced is not None, "Ray did not replace the killed replica in 120 s"
    assert replaced.pid != before[victim]
    with pytest.raises(ProcessLookupError):
        os.kill(before[victim], 0)
    print(
        f"\nkilled {victim} (pid {before[victim]}): {failed} of {len(jobs)} requests failed with 'replica_lost'; "
        f"replaced by {replaced.replica} {time.monotonic() - killed_at:.1f} s later"
    )


def test_sigterm_stops_serve_and_leaves_no_ray_process(ray_server: RayServerProcess, client: openai.OpenAI) -> None:
    running = ray_server.ray_processes()
    assert len(running) >= 6, running  # gcs_server, raylet, controller, proxy, 2 replicas at least
    started = time.monotonic()
    assert ray_server.stop(signal.SIGTERM, timeout=90) == 0, ray_server.log()[-3000:]
    stopped = time.monotonic() - started
    while ray_server.ray_processes() and time.monotonic() - started < 30:
        time.sleep(0.2)
    assert ray_server.ray_processes() == [], ray_server.ray_processes()
    print(f"\nSIGTERM: the CLI exited 0 after {stopped:.1f} s, no Ray process left of {len(running)}")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ray.serve's pydantic models, at import
def test_scaling_options_and_builder_arguments() -> None:
    from pcai_inference.ray import ReplicaScaling, app_builder
    from pcai_inference.server import ServerSettings

    settings = ServerSettings(max_batch=4, max_queue=12, shutdown_grace_s=5)
    fixed = ReplicaScaling(replicas=3, num_cpus=2, num_gpus=1).deployment_options(settings)
    assert fixed == {
        "ray_actor_options": {"num_cpus": 2, "num_gpus": 1},
        "max_ongoing_requests": 16,
        "graceful_shutdown_timeout_s": 5,
        "num_replicas": 3,
    }
    auto = ReplicaScaling(min_replicas=0, max_replicas=4).deployment_options(settings)["autoscaling_config"]
    assert auto == {"min_replicas": 0, "initial_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 4}
    for bad in (
        {"replicas": 0},
        {"max_replicas": 2, "min_replicas": 3},
        {"min_replicas": 1},
        {"num_gpus": -1},
        {"max_replicas": 2, "target_ongoing_requests": 0},
    ):
        with pytest.raises(InvalidRequestError):
            ReplicaScaling(**bad)
    with pytest.raises(InvalidRequestError, match="unknown arguments"):
        app_builder({"modle": "x.gguf"})
    with pytest.raises(InvalidRequestError, match="max_batch"):
        app_builder({"max_batch": "eight"})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ray.serve's pydantic models, at import
def test_the_proxys_own_failures_become_openai_errors() -> None:
    """What Serve's proxy does when a replica dies or none is there, through our proxy middleware."""
    from pcai_inference.ray.proxy_errors import OpenAIShapedProxyErrors

    async def no_response(scope: Any, receive: Any, send: Any) -> None:
        return None  # a replica died before answering: the proxy sends nothing

    async def cut_stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b'data: {"choices": []}\n\n', "more_body": True})

    async def plain_503(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": b"No replicas are available", "more_body": False})

    def call(app: Any) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(OpenAIShapedProxyErrors(app)({"type": "http", "path": "/v1/completions"}, receive, send))
        return sent

    start, body = call(no_response)
    assert start["status"] == 502 and shape(json.loads(body["body"]))["code"] == "replica_lost"
    events = b"".join(m.get("body", b"") for m in call(cut_stream)).decode().split("\n\n")
    assert events[0] == 'data: {"choices": []}' and events[2] == "data: [DONE]" and not events[3]
    assert shape(json.loads(events[1].removeprefix("data: ")))["code"] == "replica_lost"
    assert call(cut_stream)[-1]["more_body"] is False
    start, body = call(plain_503)
    assert start["status"] == 503 and (b"retry-after", b"1") in start["headers"]
    assert shape(json.loads(body["body"]))["message"] == "No replicas are available"
