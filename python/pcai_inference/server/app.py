"""The OpenAI-compatible HTTP routes, on FastAPI (one app: ``pcai-inference serve`` runs it with
uvicorn; a Ray Serve deployment mounts the same app).

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``,
``GET /v1/models/{id}``, ``POST /tokenize``, ``POST /detokenize`` (also under ``/v1``),
``GET /health``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidRequestError, PcaiError
from ..streaming import AsyncTokenStream, acollect
from ..types import GenerateResponse, StreamChunk
from . import openai_objects as oa
from .errors import ApiError, error_body, from_pcai_error
from .model_service import Admission, ModelService
from .request_body import GenerationJob, chat_job, completion_job

__all__ = ["create_app"]


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, by header or as they arrive."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(
            error_body(413, f"the request body is larger than {self.limit} bytes", code="body_too_large"),
            status_code=413,
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await too_large(scope, receive, send)
                return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await too_large(scope, receive, send)


class ApiKeyCheck:
    """Every route but ``/health`` needs ``Authorization: Bearer <key>`` when a key is set."""

    def __init__(self, app: ASGIApp, key: Optional[str]) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.key is not None and scope["path"] != "/health":
            given = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), self.key):
                why = "no API key given" if not given else "the API key is not valid"
                body = error_body(401, f"{why}: send 'Authorization: Bearer <key>'", code="invalid_api_key")
                await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _merged(streams: list[AsyncTokenStream]) -> AsyncIterator[tuple[int, StreamChunk]]:
    """The chunks of several streams as they come, with their index."""
    queue: asyncio.Queue[tuple[int, Optional[StreamChunk], Optional[BaseException]]] = asyncio.Queue()

    async def pump(i: int, stream: AsyncTokenStream) -> None:
        try:
            async for chunk in stream:
                await queue.put((i, chunk, None))
        except Exception as e:  # reported to the reader
            await queue.put((i, None, e))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        finished = 0
        while finished < len(streams):
            i, chunk, error = await queue.get()
            if error is not None:
                raise error
            assert chunk is not None
            if chunk.is_last:
                finished += 1
            yield i, chunk
    finally:
        for task in tasks:
            task.cancel()
        for s in streams:
            s.cancel()


def create_app(
    service: ModelService, *, manage_model: bool = True, on_ready: Optional[Callable[[], None]] = None
) -> FastAPI:
    """The server's app around `service`. With `manage_model`, the app loads the model at start-up
    (then calls `on_ready`) and frees it at shutdown; otherwise its owner does (a Ray Serve
    replica)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_model:
            await asyncio.to_thread(service.load)
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            if manage_model:
                await asyncio.to_thread(service.close)

    app = FastAPI(title="pcai-inference", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> Response:
        return e.response()

    @app.exception_handler(PcaiError)
    async def pcai_error(_: Request, e: PcaiError) -> Response:
        return from_pcai_error(e).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        message = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return JSONResponse(error_body(e.status_code, message), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, e: Exception) -> Response:
        return JSONResponse(error_body(500, f"internal error: {type(e).__name__}: {e}"), status_code=500)

    def token_text(i: int) -> str:
        return service.backend.detokenize([i])

    async def run(request: Request, job: GenerationJob, chat: bool) -> Response:
        service.check_model(job.model)
        model = service.model_id
        ident, created = oa.new_id("chatcmpl" if chat else "cmpl"), int(time.time())
        logprob_text = token_text if job.logprobs else None
        admission = service.admit(job.n)
        try:
            streams = await service.start(job.request, job.n)
            if not job.stream:
                results = await _all_or_disconnect(request, streams)
                build = oa.chat_completion if chat else oa.completion
                return JSONResponse(build(model, results, logprob_text, created, ident))
        except BaseException:
            admission.release()
            raise
        if not job.stream:
            admission.release()
        # Streaming: the places are held until the stream ends (the event stream releases them).
        return StreamingResponse(
            _event_stream(admission, streams, job, chat, model, created, ident, logprob_text),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await _json_body(request)
        return await run(request, chat_job(body, service.backend.context_window), chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await _json_body(request)
        return await run(request, completion_job(body, service.backend.context_window), chat=False)

    def model_card() -> dict[str, Any]:
        backend = service.backend
        return {
            "id": service.model_id,
            "object": "model",
            "created": service.created,
            "owned_by": "pcai-inference",
            "context_window": backend.context_window,
            "chat_template": backend.chat_template_origin,
            "max_batch": backend.max_batch,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        service.check_model(model_id)
        return model_card()

    async def tokenize(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        service.check_model(body.get("model"))
        backend = service.backend
        add_special = body.get("add_special_tokens", True)
        parse_special = body.get("parse_special", False)
        for name, flag in (("add_special_tokens", add_special), ("parse_special", parse_special)):
            if not isinstance(flag, bool):
                raise ApiError(400, f"{name} must be true or false", param=name)
        if "messages" in body:
            job = chat_job({"messages": body["messages"]}, 1)
            tokens = await asyncio.to_thread(backend.chat_prompt_ids, job.request.chat_messages)
        else:
            text = body.get("prompt", body.get("content"))
            if not isinstance(text, str):
                raise ApiError(400, "give prompt (a string) or messages", param="prompt")
            tokens = await asyncio.to_thread(backend.tokenize, text, add_special, parse_special)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": backend.context_window}

    async def detokenize(request: Request) -> dict[str, Any]:
        body = await _json_body(request)
        service.check_model(body.get("model"))
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise ApiError(400, "tokens must be a list of token ids", param="tokens")
        if any(t < 0 for t in tokens):
            raise ApiError(400, "token ids are >= 0", param="tokens")
        try:
            text = await asyncio.to_thread(service.backend.detokenize, tokens)
        except InvalidRequestError as e:
            raise ApiError(400, str(e), param="tokens") from None
        return {"prompt": text}

    for prefix in ("", "/v1"):
        app.add_api_route(f"{prefix}/tokenize", tokenize, methods=["POST"])
        app.add_api_route(f"{prefix}/detokenize", detokenize, methods=["POST"])

    @app.get("/health")
    async def health() -> Response:
        try:
            _ = service.backend
        except ApiError as e:
            return JSONResponse({"status": "unavailable", "message": e.message}, status_code=503)
        return JSONResponse({"status": "ok", "model": service.model_id, "in_flight": service.in_flight})

    app.add_middleware(ApiKeyCheck, key=service.settings.api_key)
    app.add_middleware(BodyLimit, limit=service.settings.max_body_bytes)
    return app


async def _all_or_disconnect(request: Request, streams: list[AsyncTokenStream]) -> list[GenerateResponse]:
    """Every stream to its end, unless the client goes first: then they are all cancelled."""
    collecting: asyncio.Future[list[GenerateResponse]] = asyncio.ensure_future(
        asyncio.gather(*(acollect(s) for s in streams))
    )
    gone: asyncio.Future[None] = asyncio.ensure_future(_client_gone(request))
    try:
        waiting: list[asyncio.Future[Any]] = [collecting, gone]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not collecting.done():
            raise ApiError(499, "the client disconnected")
        return list(collecting.result())
    finally:
        gone.cancel()
        if not collecting.done():
            collecting.cancel()
        for s in streams:
            s.cancel()


async def _event_stream(
    admission: Admission,
    streams: list[AsyncTokenStream],
    job: GenerationJob,
    chat: bool,
    model: str,
    created: int,
    ident: str,
    logprob_text: Optional[Callable[[int], str]],
) -> AsyncIterator[str]:
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict[str, Any]], usage: Optional[dict[str, int]] = None) -> str:
        return _sse(oa.chunk(kind, model, created, ident, choices, job.include_usage, usage))

    def choice(i: int, text: Optional[str], reason: Optional[str] = None, logprobs: Any = None) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {} if text is None else {"content": text}
            return {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        return {"index": i, "text": text or "", "logprobs": logprobs, "finish_reason": reason}

    completion_tokens, prompt_tokens = 0, 0
    try:
        with admission:
            if chat:
                for i in range(job.n):
                    first = {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                    yield event([first])
            async for i, chunk in _merged(streams):
                if chunk.text:
                    yield event([choice(i, chunk.text)])
                if chunk.is_last:
                    completion_tokens += chunk.tokens_generated or 0
                    prompt_tokens = chunk.prompt_tokens or 0
                    logprobs = None
                    if logprob_text is not None:
                        to_json = oa.chat_logprobs if chat else oa.completion_logprobs
                        logprobs = to_json(chunk, logprob_text)
                    yield event([choice(i, None, oa.finish_reason(chunk.finish_reason), logprobs)])
            if job.include_usage:
                yield event([], oa.usage(prompt_tokens, completion_tokens))
    except PcaiError as e:
        yield _sse(from_pcai_error(e).body())
    except ApiError as e:
        yield _sse(e.body())
    yield "data: [DONE]\n\n"
