"""The Ray Serve deployment: each replica loads the model once and serves the server's own app.

The routes are :func:`pcai_inference.server.create_app`'s, built per replica around the
replica's :class:`ModelService` (Serve's late-bound ingress, ``__serve_build_asgi_app__``):
streaming responses pass through Serve's proxy as they are produced, and a client that
disconnects cancels the replica's handler, which cancels its generations.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..server.app import create_app
from ..server.model_service import ModelService
from ..server.settings import ServerSettings
from .scaling import ReplicaScaling

__all__ = ["DEPLOYMENT_NAME", "REPLICA_HEADER", "REPLICA_PID_HEADER", "ModelReplica", "build_app"]

DEPLOYMENT_NAME = "pcai-inference"
REPLICA_HEADER = "x-pcai-replica"
"""Every response names the replica that served it (Ray Serve's replica id)."""
REPLICA_PID_HEADER = "x-pcai-replica-pid"
"""The serving replica's process id on its node (to find its memory, or to stop it)."""


class ReplicaHeaders:
    """Adds the replica's headers to every response of `app`."""

    def __init__(self, app: ASGIApp, replica: str, pid: int) -> None:
        self.app, self.replica, self.pid = app, replica, str(pid)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers[REPLICA_HEADER] = self.replica
                headers[REPLICA_PID_HEADER] = self.pid
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ModelReplica:
    """One replica: the model, loaded when Ray starts the replica, and the app around it."""

    def __init__(self, settings: ServerSettings) -> None:
        self._service = ModelService(settings)
        self._service.load()
        self._replica = serve.get_replica_context().replica_id.unique_id

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Called by Serve once the constructor has run: the replica's app."""
        app = create_app(self._service, manage_model=False)
        app.add_middleware(ReplicaHeaders, replica=self._replica, pid=os.getpid())
        return app

    def __del__(self) -> None:
        # Serve calls this when it stops the replica (after its requests finished or timed out).
        self._service.close()


def build_app(settings: Optional[ServerSettings] = None, scaling: Optional[ReplicaScaling] = None) -> Application:
    """The Serve application: `scaling` replicas of the model `settings` names, each serving the
    OpenAI routes with `settings`' batch, queue and API key. Run it with ``serve.run`` (or
    ``pcai-inference serve --ray``); `settings`' host and port are the Serve proxy's business.
    ``None``: the defaults (the embedded model, one replica)."""
    settings, scaling = settings or ServerSettings(), scaling or ReplicaScaling()
    ingress: Any = serve.ingress()(ModelReplica)
    deployment = serve.deployment(name=DEPLOYMENT_NAME, **scaling.deployment_options(settings))(ingress)
    return deployment.bind(settings)
