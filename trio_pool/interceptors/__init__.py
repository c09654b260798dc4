"""Interceptors for ``trio_pool.compose()`` (API.md section 6).

An interceptor is a callable ``(dispatch) -> dispatch``, where ``dispatch`` is
``async (options: RequestOptions, handler) -> None`` (the signature of
``Dispatcher.dispatch``): it returns a new dispatch function that does something around the
one it was given. ``compose(dispatcher, *interceptors)`` stacks them, the first outermost::

    client = trio_pool.compose(pool, interceptors.redirect(), interceptors.retry(),
                               interceptors.decompress())

The documentation's how-to shows how to write one. (``compose`` itself is
``trio_pool.compose``.)
"""

from ..http._dispatch import Controller as Controller
from ..http._dispatch import DispatchFunction as DispatchFunction
from ..http._dispatch import Handler as Handler
from ..http._dispatch import Interceptor as Interceptor
from ._decompress import decompress as decompress
from ._redirect import redirect as redirect
from ._retry import retry as retry

__all__ = [
    "Controller",
    "DispatchFunction",
    "Handler",
    "Interceptor",
    "decompress",
    "redirect",
    "retry",
]


def _publish_under_package_name() -> None:
    # As in trio_pool/__init__.py: reprs, tracebacks and the docs say
    # ``trio_pool.interceptors.retry``, the name users import it by.
    for value in (decompress, redirect, retry, Controller, Handler):
        value.__module__ = __name__


_publish_under_package_name()
