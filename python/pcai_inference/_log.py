"""Logging set-up: quiet by default, ``PCAI_LOG`` for a quick look at the engine's log.

The native engine's ``tracing`` events arrive on the ``pcai_inference.engine`` logger.
A library must not print on its own, so the package logger only has a ``NullHandler``
unless ``PCAI_LOG`` (e.g. ``debug``, ``info``, ``warn``) asks for output on stderr.
"""

from __future__ import annotations

import logging
import os

LOGGER_NAME = "pcai_inference"

_LEVELS = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _level_from_env(value: str) -> int | None:
    """The most verbose level named in an env-filter string such as ``mistralrs_core=debug``."""
    levels = [
        _LEVELS[part.rsplit("=", 1)[-1].strip().lower()]
        for part in value.split(",")
        if part.rsplit("=", 1)[-1].strip().lower() in _LEVELS
    ]
    return min(levels) if levels else None


def configure_logging() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    level = _level_from_env(os.environ.get("PCAI_LOG", ""))
    if level is not None and not any(getattr(h, "_pcai_env", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._pcai_env = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
    return logger
