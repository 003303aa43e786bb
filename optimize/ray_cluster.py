"""Moved to optiserve.ray_cluster; this alias keeps in-flight code working and is removed with the last old import."""

import sys

from optiserve import ray_cluster as _moved

sys.modules[__name__] = _moved
