"""The ``pcai-inference`` command: ``generate`` text, print build ``info``, ``serve`` over HTTP."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Optional, Sequence

from .backend import BackendType
from .default_model import default_model_path
from .errors import PcaiError
from .info import build_info
from .types import GenerateRequest

if TYPE_CHECKING:
    from .server import ServerSettings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcai-inference", description="Local LLM inference on the mistral.rs engine.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text from a prompt")
    g.add_argument("prompt", help="the prompt text")
    g.add_argument(
        "--model",
        help="a .gguf file, a SafeTensors folder or a Hugging Face repository id (default: the embedded Gemma 3 270M)",
    )
    g.add_argument("--filename", help="the GGUF file to take from a repository or folder that holds several")
    g.add_argument("--revision", help="a hub branch, tag or commit (default: main)")
    g.add_argument("--max-context", type=int, help="at most this many tokens per request (prompt and output)")
    g.add_argument("--device", default="auto", help='"auto", "cpu", "cuda", "cuda:N" or "metal"')
    g.add_argument("--chat-template", help="a Jinja chat template file, for --chat")
    g.add_argument("--chat", action="store_true", help="send the prompt as a user chat message")
    g.add_argument("--max-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (the default)")
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--top-k", type=int, default=40)
    g.add_argument("--min-p", type=float, default=0.05)
    g.add_argument("--seed", type=int)
    g.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--presence-penalty", type=float, default=0.0)
    g.add_argument("--frequency-penalty", type=float, default=0.0)
    g.add_argument("--stream", action="store_true", help="print text as it is generated")
    g.add_argument("--stats", action="store_true", help="print token counts and speed on stderr")

    sub.add_parser("info", help="print versions, compiled features and the device 'auto' picks")

    s = sub.add_parser("serve", help="serve the model over HTTP with OpenAI's API (needs the [server] extra)")
    s.add_argument("--model", help="a .gguf file, a SafeTensors folder or a hub id (default: the embedded model)")
    s.add_argument("--filename", help="the GGUF file to take from a repository or folder that holds several")
    s.add_argument("--model-name", help="the id clients name the model by (default: the file's name)")
    s.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="clients must send 'Authorization: Bearer KEY' (default: $PCAI_API_KEY)")
    s.add_argument("--max-batch", type=int, default=8, help="requests run together in one engine step")
    s.add_argument("--max-queue", type=int, default=64, help="requests that may wait; more get 429")
    s.add_argument("--chat-template", help="a Jinja chat template file replacing the model's")
    s.add_argument("--max-context", type=int, help="at most this many tokens per request (prompt and output)")
    s.add_argument("--device", default="auto", help='"auto", "cpu", "cuda", "cuda:N" or "metal"')
    s.add_argument("--shutdown-grace", type=float, default=30.0, help="seconds running requests get on SIGTERM")
    r = s.add_argument_group("Ray Serve (needs the [ray] extra)")
    r.add_argument("--ray", action="store_true", help="serve replicas of the model on Ray Serve")
    r.add_argument("--replicas", type=int, help="replicas of the model (default 1; with --max-replicas: the fewest)")
    r.add_argument("--max-replicas", type=int, help="autoscale between --replicas and this many replicas")
    r.add_argument("--target-ongoing-requests", type=float, help="autoscaling's aim per replica (default: --max-batch)")
    r.add_argument("--num-cpus", type=float, help="CPUs Ray reserves per replica (default 1)")
    r.add_argument("--num-gpus", type=float, help="GPUs Ray reserves per replica (default 0)")
    r.add_argument("--ray-address", help="a running Ray cluster (e.g. 10.0.0.1:6379) rather than a local instance")
    return p


def _serve_on_ray(args: argparse.Namespace, settings: ServerSettings) -> int:
    try:
        from .ray import ReplicaScaling, serve_on_ray
    except ImportError as e:
        print(f'error: --ray needs its extra: pip install "pcai-inference[ray]" ({e})', file=sys.stderr)
        return 2
    scaling = ReplicaScaling(
        replicas=1 if args.replicas is None else args.replicas,
        max_replicas=args.max_replicas,
        target_ongoing_requests=args.target_ongoing_requests,
        num_cpus=1.0 if args.num_cpus is None else args.num_cpus,
        num_gpus=0.0 if args.num_gpus is None else args.num_gpus,
    )
    return serve_on_ray(settings, scaling, address=args.ray_address)


def _serve(args: argparse.Namespace) -> int:
    try:
        from .server import ServerSettings, serve
    except ImportError as e:
        print(f'error: the server needs its extra: pip install "pcai-inference[server]" ({e})', file=sys.stderr)
        return 2
    settings = ServerSettings(
        model=args.model,
        filename=args.filename,
        model_name=args.model_name,
        host=args.host,
        port=args.port,
        api_key=args.api_key or ServerSettings.api_key_from_env(),
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        chat_template=args.chat_template,
        max_context=args.max_context,
        device=args.device,
        shutdown_grace_s=args.shutdown_grace,
    )
    if args.ray:
        return _serve_on_ray(args, settings)
    ray_only = ("replicas", "max_replicas", "target_ongoing_requests", "num_cpus", "num_gpus", "ray_address")
    given = [f"--{name.replace('_', '-')}" for name in ray_only if getattr(args, name) is not None]
    if given:
        print(f"error: {', '.join(given)} only apply with --ray", file=sys.stderr)
        return 2
    return serve(settings)


def _generate(args: argparse.Namespace) -> int:
    model = args.model or str(default_model_path())
    params = dict(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        seed=args.seed,
        stop=tuple(args.stop),
        repetition_penalty=args.repetition_penalty,
        presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty,
    )
    if args.chat:
        request = GenerateRequest(messages=({"role": "user", "content": args.prompt},), **params)
    else:
        request = GenerateRequest(prompt=args.prompt, **params)
    with BackendType.MISTRALRS.create(device=args.device) as backend:
        backend.load_model(
            model,
            filename=args.filename,
            revision=args.revision,
            chat_template=args.chat_template,
            max_context=args.max_context,
        )
        if args.stream:
            stream = backend.generate_stream(request)
            for chunk in stream:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
            last = stream.last
            if args.stats and last is not None and last.timings is not None:
                print(
                    f"[{last.finish_reason.value if last.finish_reason else '?'}] prompt {last.prompt_tokens} tokens, "
                    f"generated {last.tokens_generated} tokens at {last.timings.decode_tokens_per_second:.1f} tok/s",
                    file=sys.stderr,
                )
        else:
            r = backend.generate(request)
            print(r.text)
            if args.stats:
                print(
                    f"[{r.finish_reason.value}] prompt {r.prompt_tokens} tokens, generated {r.tokens_generated} "
                    f"tokens at {r.timings.decode_tokens_per_second:.1f} tok/s",
                    file=sys.stderr,
                )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "info":
            print(json.dumps(build_info(), indent=2))
            return 0
        if args.command == "serve":
            return _serve(args)
        return _generate(args)
    except PcaiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
