"""Moved to optiserve.data; this alias keeps in-flight code working and is removed with the last old import."""

import sys

from optiserve import data as _moved

sys.modules[__name__] = _moved
