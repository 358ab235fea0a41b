"""The ``pcai-inference`` command: ``generate`` text, print build ``info``, ``serve`` over HTTP."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from .backend import BackendType
from .default_model import default_model_path
from .errors import PcaiError
from .info import build_info
from .types import GenerateRequest

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
    return p


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
