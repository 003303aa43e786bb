"""Serving: the models of a model repository on Ray Serve over the Open Inference Protocol (KServe v2 REST).

Ray is imported only when an application is started, so the pure parts (codec, batching, config) stay light.
The names below are loaded on first use: a replica or a batch actor importing `serve._session` then skips the
deployment code (FastAPI, Ray Serve's API), a quarter of a second of its start.
"""

from importlib import import_module

_HOMES = {"AppInfo": "serve._deploy", "replica_counts": "serve._deploy", "serve_config": "serve._deploy",
          "start_app": "serve._deploy", "status": "serve._deploy", "stop_app": "serve._deploy",
          "ModelConfig": "serve.config", "ServeConfig": "serve.config", "load_config": "serve.config"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'serve' has no attribute {name!r}")
