"""The OpenAI-compatible server on Ray Serve (``pip install "pcai-inference[ray]"``): replicas of
the model, each serving the same routes as ``pcai-inference serve``.

``pcai-inference serve --ray --replicas 2`` runs it on a local Ray instance; ``serve run
pcai_inference.ray:app_builder model=my.gguf replicas=2`` (or a Serve config file with that
``import_path``) on a cluster; in code, :func:`build_app` gives the Serve application.
"""

from __future__ import annotations

from .builder import app_builder
from .deployment import REPLICA_HEADER, REPLICA_PID_HEADER, build_app
from .local import serve_on_ray
from .scaling import ReplicaScaling

__all__ = ["REPLICA_HEADER", "REPLICA_PID_HEADER", "ReplicaScaling", "app_builder", "build_app", "serve_on_ray"]
