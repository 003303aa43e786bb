"""Moved to optiserve.errors; this alias keeps in-flight code working and is removed with the last old import."""

import sys

from optiserve import errors as _moved

sys.modules[__name__] = _moved
