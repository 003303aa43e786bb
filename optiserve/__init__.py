"""optiserve's base: what every part of the project shares, and nothing else.

`optimize/`, `serve/`, `autoscale/` and `loadtests/` stand on this package side by side; it imports none of
them. Modules: `errors` (user errors and the CLI exit-code rule), `console` (one rich Console factory),
`hashing` (sha256 of files and folders), `config` (YAML files into typed configs), `repository` (the model
repository optimize publishes into and serve reads), `ray_cluster` (the local Ray head, started on demand).
See docs/architecture.md for the layers.
"""

__all__ = ["config", "console", "errors", "hashing", "ray_cluster", "repository"]
