"""The whole error hierarchy in one namespace: ``from trio_pool.errors import *``."""

from ._errors import *  # noqa: F403
from ._errors import __all__ as __all__
