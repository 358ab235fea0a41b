"""One engine under test, measured in its own process (so peak RSS is its own).

Usage: python bench/engines.py ENGINE MODEL.gguf OUT.json
ENGINE is ``pcai`` (this package, its defaults: up to 8 requests batched), ``pcai-serial`` (this
package with ``max_batch=1``: batching off), ``mistralrs`` (the official wheel) or ``llama-cpp``
(llama-cpp-python).
Every engine runs the same greedy workloads with end-of-sequence tokens banned, so each run
generates exactly the tokens asked for.
"""

from __future__ import annotations

import itertools
import json
import resource
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

DECODE_TOKENS = 128
CONCURRENT = 4
CONCURRENT_TOKENS = 64
# Concurrent loads with different prompts: all at once, and arriving STAGGER_S apart.
LOADS = (4, 8, 16)
STAGGERED_LOADS = (4, 8)
STAGGER_S = 0.5
# Time to first token of a request arriving while BUSY others decode, over ARRIVALS arrivals.
BUSY = 7
ARRIVALS = 10
# The context window every engine is given (llama.cpp's n_ctx; our max_context).
CONTEXT = 2048
SHORT_PROMPT = "The history of the Roman Empire began"
# About 512 tokens of plain English for the Gemma 3 tokenizer (checked by the harness).
LONG_PROMPT = (
    "The Roman Empire was the post-Republican state of ancient Rome. It included territory around the "
    "Mediterranean in Europe, North Africa, and Western Asia, and was ruled by emperors. "
) * 17
# A long chat history or a retrieved document: the longest run of LONG_PROMPT's words within
# HISTORY_TOKENS tokens of the model's tokenizer (CONTEXT leaves room for the answer).
HISTORY_TOKENS = 2000


class FifoLock:
    """A lock granted in the order it was asked for: how a serving process that runs one request
    at a time queues the others (first come, first served). `threading.Lock` grants in no order,
    which made a newcomer's wait depend on thread scheduling instead of the queue ahead of it."""

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._turn:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._turn.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *_: object) -> None:
        with self._turn:
            self._serving += 1
            self._turn.notify_all()


class Engine:
    """The workloads every engine implements."""

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def generate(self, prompt: str, n: int) -> tuple[float, int]:
        """Greedy, EOS banned; returns (seconds to the first token, tokens generated)."""
        raise NotImplementedError

    def stream(self, prompt: str, n: int) -> Iterator[str]:
        raise NotImplementedError

    def first_token(self, prompt: str) -> None:
        """Returns when the first token of a greedy answer to `prompt` is out."""
        for _ in self.stream(prompt, 1):
            break

    concurrent_safe = True


class Pcai(Engine):
    max_batch: int | None = None  # the package's default

    def __init__(self, model: str) -> None:
        from pcai_inference import BackendType

        self.b = BackendType.MISTRALRS.create(device="cpu")
        self.b.load_model(model, max_context=CONTEXT, max_batch=self.max_batch)
        self.ban = {i: float("-inf") for i in self.b.tokenizer.eog_ids}  # type: ignore[attr-defined]

    def count_tokens(self, text: str) -> int:
        return len(self.b.tokenize(text))

    def generate(self, prompt: str, n: int) -> tuple[float, int]:
        r = self.b.generate(prompt, max_tokens=n, temperature=0.0, logit_bias=self.ban)
        return r.timings.prompt_seconds, r.tokens_generated

    def stream(self, prompt: str, n: int) -> Iterator[str]:
        for chunk in self.b.generate_stream(prompt, max_tokens=n, temperature=0.0, logit_bias=self.ban):
            yield chunk.text


class LlamaCpp(Engine):
    concurrent_safe = False  # one context; calls are served one at a time in arrival order

    def __init__(self, model: str) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=model, n_ctx=CONTEXT, n_threads=2, seed=0, verbose=False)
        self.ban = {i: float("-inf") for i in (self.llm.token_eos(), *self._eog_extra())}
        self.lock = FifoLock()

    def _eog_extra(self) -> list[int]:
        ids = self.llm.tokenize(b"<end_of_turn>", add_bos=False, special=True)
        return ids if len(ids) == 1 else []

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode()))

    def generate(self, prompt: str, n: int) -> tuple[float, int]:
        with self.lock:
            t0 = time.perf_counter()
            first = None
            count = 0
            for _ in self.llm.create_completion(
                prompt, max_tokens=n, temperature=0.0, repeat_penalty=1.0, logit_bias=self.ban, stream=True
            ):
                first = first or time.perf_counter() - t0
                count += 1
            return first or 0.0, count

    def stream(self, prompt: str, n: int) -> Iterator[str]:
        with self.lock:
            for part in self.llm.create_completion(
                prompt, max_tokens=n, temperature=0.0, repeat_penalty=1.0, logit_bias=self.ban, stream=True
            ):
                yield part["choices"][0]["text"]


class MistralRsWheel(Engine):
    """The official wheel. Its completion API does not stream, so the streaming figures are
    left out; time to first token is its own prompt time. Called from several threads it
    fails with `Already borrowed`, so calls are served one at a time in arrival order, as for
    llama.cpp."""

    concurrent_safe = False

    def __init__(self, model: str) -> None:
        from mistralrs import Runner, Which

        p = Path(model)
        self.runner = Runner(
            which=Which.GGUF(tok_model_id=None, quantized_model_id=str(p.parent), quantized_filename=p.name)
        )
        self.lock = FifoLock()

    def _complete(self, prompt: str, n: int) -> Any:
        from mistralrs import CompletionRequest

        with self.lock:
            return self.runner.send_completion_request(
                CompletionRequest(prompt=prompt, model="bench", max_tokens=n, temperature=0.0, ignore_eos=True)
            )

    def count_tokens(self, text: str) -> int:
        return int(self._complete(text, 1).usage.prompt_tokens)

    def generate(self, prompt: str, n: int) -> tuple[float, int]:
        usage = self._complete(prompt, n).usage
        return float(usage.total_prompt_time_sec), int(usage.completion_tokens)

    def stream(self, prompt: str, n: int) -> Iterator[str]:
        raise NotImplementedError

    def first_token(self, prompt: str) -> None:
        self._complete(prompt, 1)


class PcaiSerial(Pcai):
    """This package with batching off: concurrent requests run one at a time."""

    max_batch = 1


ENGINES: dict[str, Callable[[str], Engine]] = {
    "pcai": Pcai,
    "pcai-serial": PcaiSerial,
    "llama-cpp": LlamaCpp,
    "mistralrs": MistralRsWheel,
}


def timed_decode(engine: Engine) -> dict[str, float]:
    """Tokens per second over the decode phase (after the first token), median of 3."""
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        ttft, n = engine.generate(SHORT_PROMPT, DECODE_TOKENS)
        total = time.perf_counter() - t0
        rates.append((n - 1) / max(total - ttft, 1e-9))
    return {"decode_tok_s": statistics.median(rates), "decode_tokens": float(DECODE_TOKENS)}


def timed_stream(engine: Engine) -> dict[str, float]:
    t0 = time.perf_counter()
    stamps = []
    try:
        for _ in engine.stream(SHORT_PROMPT, DECODE_TOKENS):
            stamps.append(time.perf_counter())
    except NotImplementedError:
        return {}
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "stream_decode_tok_s": (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9),
        "stream_ms_between_chunks": 1000 * statistics.median(gaps) if gaps else 0.0,
        "stream_first_chunk_s": stamps[0] - t0 if stamps else 0.0,
    }


def _first_token_of(engine: Engine, prompt: str) -> tuple[int, float]:
    """The prompt's token count and the seconds to its first token."""
    n_prompt = engine.count_tokens(prompt)
    t0 = time.perf_counter()
    ttft, _ = engine.generate(prompt, 1)
    return n_prompt, ttft or time.perf_counter() - t0


def timed_prefill(engine: Engine) -> dict[str, float]:
    n_prompt, ttft = _first_token_of(engine, LONG_PROMPT)
    return {"prefill_prompt_tokens": float(n_prompt), "ttft_s": ttft, "prefill_tok_s": n_prompt / ttft}


def history_prompt(engine: Engine) -> str:
    words = (LONG_PROMPT * 4).split(" ")
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if engine.count_tokens(" ".join(words[:mid])) <= HISTORY_TOKENS:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def timed_long_prefill(engine: Engine) -> dict[str, float]:
    n_prompt, ttft = _first_token_of(engine, history_prompt(engine))
    return {"history_prompt_tokens": float(n_prompt), "history_ttft_s": ttft, "history_prefill_tok_s": n_prompt / ttft}


def timed_concurrent(engine: Engine) -> dict[str, float]:
    prompts = [f"{SHORT_PROMPT} ({i})" for i in range(CONCURRENT)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        counts = list(pool.map(lambda p: engine.generate(p, CONCURRENT_TOKENS)[1], prompts))
    wall = time.perf_counter() - t0
    return {"concurrent_total_tok_s": sum(counts) / wall}


def different_prompts(n: int) -> list[str]:
    """n prompts of different texts and token lengths."""
    topics = ["the Roman Empire", "volcanoes", "the history of jazz", "prime numbers", "bread baking"]
    return [f"{'Here is a short note. ' * (i % 3)}Write about {topics[i % len(topics)]} ({i})." for i in range(n)]


def timed_loads(engine: Engine) -> dict[str, float]:
    """Total tok/s of n concurrent requests with different prompts, at once and staggered."""
    result = {}
    for n, stagger in [(n, 0.0) for n in LOADS] + [(n, STAGGER_S) for n in STAGGERED_LOADS]:

        def run(i_prompt: tuple[int, str], stagger: float = stagger) -> int:
            time.sleep(i_prompt[0] * stagger)
            return engine.generate(i_prompt[1], CONCURRENT_TOKENS)[1]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            counts = list(pool.map(run, enumerate(different_prompts(n))))
        key = f"load{n}_tok_s" if not stagger else f"load{n}_staggered_tok_s"
        result[key] = sum(counts) / (time.perf_counter() - t0)
    return result


def timed_arrival_ttft(engine: Engine) -> dict[str, float]:
    """Time to first token of requests arriving one by one while BUSY others decode."""
    stop = threading.Event()

    def keep_busy(prompt: str) -> None:
        while not stop.is_set():
            engine.generate(prompt, CONCURRENT_TOKENS)

    waits = []
    with ThreadPoolExecutor(BUSY) as pool:
        busy = [pool.submit(keep_busy, p) for p in different_prompts(BUSY)]
        time.sleep(2.0)
        for i in range(ARRIVALS):
            t0 = time.perf_counter()
            engine.first_token(f"A new question ({i}): what is the tallest mountain?")
            waits.append(time.perf_counter() - t0)
            time.sleep(0.3)
        stop.set()
        for f in busy:
            f.result()
    return {"arrival_ttft_p50_s": statistics.median(waits), "arrival_ttft_max_s": max(waits)}


def memory_mib(field: str) -> float:
    """`VmRSS` (now) or `VmHWM` (peak) of this process; `ru_maxrss` where /proc is missing.
    VmHWM starts afresh at exec, while ru_maxrss carries the parent's peak over."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    name, model, out = sys.argv[1], sys.argv[2], sys.argv[3]
    t0 = time.perf_counter()
    engine = ENGINES[name](model)
    result: dict[str, Any] = {"engine": name, "load_s": time.perf_counter() - t0}
    result["rss_after_load_mib"] = memory_mib("VmRSS")
    engine.generate(SHORT_PROMPT, 4)  # warm-up
    # Single requests first: load, prefill, decode and streaming make the single-request peak.
    for measure in (timed_prefill, timed_decode, timed_stream):
        result.update(measure(engine))
    result["peak_rss_single_mib"] = memory_mib("VmHWM")
    # The ~2,000-token prompt's activations count in the whole run's peak.
    for measure in (timed_long_prefill, timed_concurrent, timed_loads, timed_arrival_ttft):
        result.update(measure(engine))
    result["peak_rss_mib"] = memory_mib("VmHWM")
    Path(out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
