"""Serving: the models of a model repository on Ray Serve over the Open Inference Protocol (KServe v2 REST).

Ray is imported only when an application is started, so the pure parts (codec, batching, config) stay light.
"""

from serve._deploy import AppInfo, replica_counts, serve_config, start_app, status, stop_app
from serve.config import ModelConfig, ServeConfig, load_config

__all__ = [
    "AppInfo", "ModelConfig", "ServeConfig", "load_config", "replica_counts", "serve_config", "start_app", "status",
    "stop_app",
]
