"""`owl serve`: an OpenAI-compatible HTTP API over the inference backends (owlkit.backends.base).

- :class:`Server` (registry.py): the served bases and adapters, api key, declared use, terms checks;
- :func:`create_app` (app.py): the FastAPI application; :func:`run_in_thread` serves it on a free
  loopback port in the background (tests, the demo, the benchmark);
- schemas.py: request bodies; generation.py: backend events -> text, stop strings; errors.py: OpenAI's
  error shape and HTTP statuses.

Names are loaded lazily so ``import owlkit.serve`` does not pull FastAPI in.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Server", "create_app", "run_in_thread"]


def __getattr__(name: str) -> Any:
    if name == "Server":
        from owlkit.serve.registry import Server

        return Server
    if name in ("create_app", "run_in_thread"):
        from owlkit.serve import app

        return getattr(app, name)
    raise AttributeError(name)
