"""The application builder for Serve's own tools: ``serve run pcai_inference.ray:app_builder
model=my.gguf replicas=2`` or, in a Serve config file, ``import_path: pcai_inference.ray:app_builder``
with the same names under ``args``."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ray.serve import Application

from ..errors import InvalidRequestError
from ..server.settings import ServerSettings
from .deployment import build_app
from .scaling import ReplicaScaling

__all__ = ["app_builder"]

# `serve run` passes every argument as a string; a config file passes YAML's types.
_SERVER_ARGS: dict[str, Callable[[Any], Any]] = {
    "model": str,
    "model_name": str,
    "filename": str,
    "api_key": str,
    "max_batch": int,
    "max_queue": int,
    "max_context": int,
    "chat_template": str,
    "device": str,
    "max_body_bytes": int,
    "shutdown_grace_s": float,
}
_SCALING_ARGS: dict[str, Callable[[Any], Any]] = {
    "replicas": int,
    "min_replicas": int,
    "max_replicas": int,
    "target_ongoing_requests": float,
    "num_cpus": float,
    "num_gpus": float,
}


def _converted(args: Mapping[str, Any], kinds: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    out = {}
    for name, kind in kinds.items():
        value = args.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or (kind is not str and isinstance(value, str) and not value.strip()):
            raise InvalidRequestError(f"{name}: {value!r} is not a {kind.__name__}")
        try:
            out[name] = kind(value)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"{name}: {value!r} is not a {kind.__name__}") from None
    return out


def app_builder(args: dict[str, Any]) -> Application:
    """The application from Serve's arguments: `model`, `model_name`, `filename`, `api_key`
    (default: ``$PCAI_API_KEY`` where the application is built), `max_batch`, `max_queue`,
    `max_context`, `chat_template`, `device`, `replicas` (or `min_replicas`, `max_replicas`,
    `target_ongoing_requests` to autoscale), `num_cpus` and `num_gpus` per replica."""
    unknown = sorted(set(args) - set(_SERVER_ARGS) - set(_SCALING_ARGS))
    if unknown:
        known = ", ".join([*_SERVER_ARGS, *_SCALING_ARGS])
        raise InvalidRequestError(f"unknown arguments {unknown}; the arguments are: {known}")
    server = _converted(args, _SERVER_ARGS)
    server.setdefault("api_key", ServerSettings.api_key_from_env())
    return build_app(ServerSettings(**server), ReplicaScaling(**_converted(args, _SCALING_ARGS)))
