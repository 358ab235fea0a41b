"""Runs fault cases in this (child) process and prints one JSON line per case.

``python fault_runner.py CASES.json`` where the file holds a list of ``{"name", "kind", ...}``.
The parent test reads the lines: a case that crashed the process is the one that started and
never reported. Kinds: ``load`` (``load_model(path, **kwargs)``) and ``generate`` (on a model
loaded once, ``generate(request kwargs)`` or ``chat``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from pcai_inference import BackendType, PcaiError


def report(name: str, started: float, outcome: str, error: BaseException | None = None) -> None:
    line = {"name": name, "outcome": outcome, "seconds": round(time.monotonic() - started, 3)}
    if error is not None:
        line["type"] = type(error).__name__
        line["message"] = str(error)[:500]
        line["pcai"] = isinstance(error, PcaiError)
    print(json.dumps(line), flush=True)


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        cases: list[dict[str, Any]] = json.load(f)
    loaded = None
    for case in cases:
        print(json.dumps({"name": case["name"], "outcome": "started"}), flush=True)
        started = time.monotonic()
        backend = BackendType.MISTRALRS.create(device="cpu")
        try:
            if case["kind"] == "load":
                backend.load_model(case["path"], **case.get("kwargs", {}))
                backend.unload()
            else:
                if "chat_template" in case:  # a model of its own, with this template
                    target = BackendType.MISTRALRS.create(device="cpu")
                    target.load_model(case["model"], max_context=256, chat_template=case["chat_template"])
                else:
                    if loaded is None:
                        loaded = BackendType.MISTRALRS.create(device="cpu")
                        loaded.load_model(case["model"], max_context=case.get("max_context", 256))
                    target = loaded
                request = dict(case["request"])
                if "logit_bias" in request:
                    request["logit_bias"] = {int(k): v for k, v in request["logit_bias"].items()}
                if case.get("decode_floats"):
                    for key in case["decode_floats"]:
                        request[key] = float(request[key])
                if "messages" in request:
                    target.chat(request.pop("messages"), **request)
                else:
                    target.generate(request.pop("prompt"), **request)
        except Exception as e:  # reported, never raised: the parent judges the type
            report(case["name"], started, "error", e)
        else:
            report(case["name"], started, "ok")
    print(json.dumps({"name": "", "outcome": "finished"}), flush=True)


if __name__ == "__main__":
    main()
