"""``pcai-inference serve --ray``: the deployment on a Ray instance this process starts (or on a
running cluster, with ``--ray-address``), served by Serve's HTTP proxy on the server's address.

SIGTERM and Ctrl-C stop Serve (replicas get ``shutdown_grace_s``, at most about 30 s, to finish
their requests) and the Ray instance this process started, with every process it ran; also while
the replicas are still starting.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sys
import threading
import time
from types import FrameType
from typing import Optional

from ..server.settings import ServerSettings
from .proxy_errors import CALLBACK_ENV, CALLBACK_PATH
from .scaling import ReplicaScaling

__all__ = ["APP_NAME", "serve_on_ray"]

APP_NAME = "pcai-inference"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OBJECT_STORE_BYTES = 128 * 1024 * 1024
"""Replicas pass nothing through Ray's object store: the least it takes is plenty."""


def _say(message: str) -> None:
    print(f"pcai-inference: {message}", file=sys.stderr, flush=True)


def serve_on_ray(settings: ServerSettings, scaling: ReplicaScaling, address: Optional[str] = None) -> int:
    """Serves until SIGTERM or Ctrl-C; returns the exit status (1: Serve could not start its
    proxy or the replicas, the reason logged)."""
    import ray
    from ray import serve

    from .deployment import build_app

    stop = threading.Event()
    started = time.monotonic()
    if address is None:
        # A local instance: no dashboard, CPUs enough for the replicas asked. Its processes start
        # in this process group: Ctrl-C at a terminal would signal them all, and a raylet that
        # stops first leaves Serve unable to stop its replicas. They inherit SIGINT ignored
        # (this process handles it below, once Ray has started).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # The proxy answers failures in OpenAI's shape (its processes inherit this environment).
        os.environ.setdefault(CALLBACK_ENV, CALLBACK_PATH)
        cpus = max(os.cpu_count() or 1, math.ceil(scaling.num_cpus * (scaling.max_replicas or scaling.replicas)))
        ray.init(
            address="local",
            num_cpus=cpus,
            object_store_memory=_OBJECT_STORE_BYTES,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    else:
        ray.init(address=address, logging_level=logging.WARNING)

    def on_signal(sig: int, frame: Optional[FrameType]) -> None:
        stop.set()

    # After ray.init, which installs its own SIGTERM handler.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    deployed = threading.Event()
    try:
        ray_ready = time.monotonic()
        quiet = {"log_level": "WARNING"}
        serve.start(http_options={"host": settings.host, "port": settings.port}, logging_config=quiet)
        # Serve waits for the replicas without a limit (a replica Ray cannot place waits for
        # ever): it deploys on a thread, so that SIGTERM and Ctrl-C still stop everything.
        failure: list[BaseException] = []

        def deploy() -> None:
            try:
                serve.run(build_app(settings, scaling), name=APP_NAME, route_prefix="/", logging_config=quiet)
            except BaseException as e:  # handed to the main thread
                failure.append(e)
            finally:
                deployed.set()

        threading.Thread(target=deploy, name="pcai-serve-deploy", daemon=True).start()
        while not deployed.wait(0.2):
            if stop.is_set():
                _say("stopped before the replicas were ready")
                return 0
        if failure:
            raise failure[0]
        ready = time.monotonic()
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        count = f"{scaling.low} to {scaling.max_replicas}" if scaling.autoscaling else str(scaling.replicas)
        _say(
            f"serving on {where} at http://{settings.host}:{settings.port}/v1 with {count} replica(s); "
            f"ray started in {ray_ready - started:.1f} s, replicas ready {ready - ray_ready:.1f} s later"
        )
        stop.wait()
        return 0
    except RuntimeError as e:  # Serve's word for a proxy or a deployment that failed to start
        # The last line says why (a Ray task error's first lines name the actor); the log has it all.
        lines = [line for line in _ANSI.sub("", str(e)).splitlines() if line.strip()]
        _say(f"Ray Serve did not start: {lines[-1].strip() if lines else type(e).__name__}")
        return 1
    finally:
        # Also before the replicas were ready (the deploying thread still waits on Serve): Serve
        # stops first, else Ray's worker in this process waits for its lost GCS and exits 1.
        if address is None:
            serve.shutdown()  # type: ignore[no-untyped-call]
        else:
            serve.delete(APP_NAME)
        ray.shutdown()
