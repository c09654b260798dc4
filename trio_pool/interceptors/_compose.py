"""``trio_pool.compose()``: a dispatcher with interceptors around its ``dispatch``.

The composed dispatcher itself is :class:`trio_pool.http._interface.Composed` (next to the
``Dispatcher`` it derives from, since ``Dispatcher.compose()`` builds it); this is the
function form of API.md section 6.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import InvalidArgumentError
from ..http._interface import Dispatcher

if TYPE_CHECKING:
    from ..http._dispatch import Interceptor

__all__ = ["compose"]


def compose(dispatcher: Dispatcher, *interceptors: Interceptor) -> Dispatcher:
    """``dispatcher`` with ``interceptors`` around its ``dispatch()``, the first one
    outermost: in ``compose(pool, redirect(), retry())``, ``redirect()`` sees each request
    first and every hop it sends goes through ``retry()``. Same as
    ``dispatcher.compose(*interceptors)`` (see there for what the result delegates). Not a
    checkpoint.

    Raises:
        InvalidArgumentError: ``dispatcher`` is not a ``Dispatcher``, or an interceptor is
            not a ``(dispatch) -> dispatch`` callable.
    """
    if not isinstance(dispatcher, Dispatcher):
        raise InvalidArgumentError(
            f"invalid dispatcher {dispatcher!r}: expected a trio_pool.Dispatcher"
        )
    return dispatcher.compose(*interceptors)
