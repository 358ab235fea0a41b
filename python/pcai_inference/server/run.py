"""Running the server with uvicorn: ``pcai-inference serve`` and ``python -m pcai_inference.server``.

SIGTERM and Ctrl-C stop accepting connections, let running requests finish for
``shutdown_grace_s`` seconds, free the model and exit 0.
"""

from __future__ import annotations

import signal
import socket
import sys
from types import FrameType
from typing import Callable, Optional

from .app import create_app
from .model_service import ModelService
from .settings import ServerSettings

__all__ = ["serve"]


def _server_class(ready: Callable[[], None]) -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that SIGTERM (the normal way to stop a service) ends with exit
        status 0 once requests have finished, rather than re-raising the signal afterwards; and
        `ready` is called once the socket listens."""

        def handle_exit(self, sig: int, frame: Optional[FrameType]) -> None:
            if sig == signal.SIGTERM:
                self.should_exit = True
                return
            super().handle_exit(sig, frame)

        async def startup(self, sockets: Optional[list[socket.socket]] = None) -> None:
            await super().startup(sockets)
            ready()

    return Server


def serve(settings: ServerSettings) -> int:
    """Serves until stopped; returns the process exit status (1: the model did not load or the
    address could not be bound; the reason is logged)."""
    import uvicorn

    service = ModelService(settings)

    def ready() -> None:
        url = f"http://{settings.host}:{settings.port}"
        print(f"pcai-inference: serving {service.model_id!r} at {url}/v1", file=sys.stderr, flush=True)

    config = uvicorn.Config(
        create_app(service),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
    )
    server = _server_class(ready)(config)
    try:
        server.run()
    except SystemExit:  # uvicorn's way out of a failed start-up, after logging why
        return 1
    return 0 if server.started else 1
