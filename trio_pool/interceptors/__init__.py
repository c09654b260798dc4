"""Interceptors for ``trio_pool.compose()`` (API.md section 6).

An interceptor is a callable ``(dispatch) -> dispatch``, where ``dispatch`` is
``async (options: RequestOptions, handler) -> None`` (the signature of
``Dispatcher.dispatch``): it returns a new dispatch function that does something around the
one it was given. ``compose(dispatcher, *interceptors)`` stacks them, the first outermost::

    client = trio_pool.compose(pool, interceptors.redirect(), interceptors.retry(),
                               interceptors.decompress())

The documentation's how-to shows how to write one.
"""

from ..http._dispatch import Controller as Controller
from ..http._dispatch import DispatchFunction as DispatchFunction
from ..http._dispatch import Handler as Handler
from ..http._dispatch import Interceptor as Interceptor
from ._compose import compose as compose
from ._decompress import decompress as decompress
from ._redirect import redirect as redirect
from ._retry import retry as retry

__all__ = [
    "Controller",
    "DispatchFunction",
    "Handler",
    "Interceptor",
    "compose",
    "decompress",
    "redirect",
    "retry",
]
