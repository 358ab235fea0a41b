"""How many replicas a Ray Serve deployment runs and what each one reserves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..errors import InvalidRequestError
from ..server.settings import ServerSettings

__all__ = ["ReplicaScaling"]


@dataclass(frozen=True)
class ReplicaScaling:
    """A fixed number of `replicas`, or autoscaling between `min_replicas` and `max_replicas`
    (set `max_replicas` to autoscale), aiming at `target_ongoing_requests` per replica.

    `num_cpus` and `num_gpus` are what Ray reserves for each replica (its scheduling, not a
    limit on the engine's threads): a replica on a GPU node asks for ``num_gpus=1``."""

    replicas: int = 1
    min_replicas: Optional[int] = None
    max_replicas: Optional[int] = None
    target_ongoing_requests: Optional[float] = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        for name in ("replicas", "min_replicas", "max_replicas"):
            value = getattr(self, name)
            if value is None and name != "replicas":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "min_replicas" else 1):
                raise InvalidRequestError(f"{name} must be a positive integer, got {value!r}")
        if self.max_replicas is None and (self.min_replicas is not None or self.target_ongoing_requests is not None):
            raise InvalidRequestError("min_replicas and target_ongoing_requests autoscale: give max_replicas too")
        if self.max_replicas is not None and self.max_replicas < self.low:
            raise InvalidRequestError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.low})")
        if self.target_ongoing_requests is not None and not self.target_ongoing_requests > 0:
            raise InvalidRequestError(f"target_ongoing_requests must be > 0, got {self.target_ongoing_requests!r}")
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidRequestError(f"{name} must be a number >= 0, got {value!r}")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None

    @property
    def low(self) -> int:
        """The fewest replicas that run (autoscaling starts there)."""
        return self.replicas if self.min_replicas is None else self.min_replicas

    def deployment_options(self, server: ServerSettings) -> dict[str, Any]:
        """Options for ``Deployment.options``. A replica takes at most `max_batch + max_queue`
        requests, the most its :class:`ModelService` admits; more wait in Ray's router (so a
        replica does not answer 429 while another has room — for requests of one choice: the
        service counts a request for `n` choices `n` times, Ray once). Autoscaling aims by default at a
        full batch per replica."""
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": server.max_batch + server.max_queue,
            "graceful_shutdown_timeout_s": server.shutdown_grace_s,
        }
        if self.autoscaling:
            options["autoscaling_config"] = {
                "min_replicas": self.low,
                "initial_replicas": max(self.low, 1),
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests or server.max_batch,
            }
        else:
            options["num_replicas"] = self.replicas
        return options
