"""Test helpers for code that uses ``trio_pool``: a mock dispatcher and scripted servers.

* :class:`MockPool` is a real ``Pool`` whose server is the routes you declare, over
  in-memory streams (no sockets): hand it to application code that takes a ``Pool`` (or any
  :class:`trio_pool.Dispatcher`).
* :func:`serve_h11` and :func:`serve_memory` run a scripted HTTP/1.1 server on h11 (on
  loopback TCP, or over in-memory streams) for testing against real protocol traffic.

See the "Testing" page of the documentation for worked examples.
"""

from types import FunctionType as _FunctionType

from ._mock import MockPool as MockPool
from ._routes import BodyMatcher as BodyMatcher
from ._routes import HeadersMatcher as HeadersMatcher
from ._routes import Matcher as Matcher
from ._routes import MockCall as MockCall
from ._routes import MockInterceptor as MockInterceptor
from ._routes import MockNotMatchedError as MockNotMatchedError
from ._routes import MockReply as MockReply
from ._routes import MockScope as MockScope
from ._routes import QueryMatcher as QueryMatcher
from ._routes import Tunnel as Tunnel
from ._server import H11Server as H11Server
from ._server import Script as Script
from ._server import ServerConnection as ServerConnection
from ._server import ServerRequest as ServerRequest
from ._server import TaskStarter as TaskStarter
from ._server import serve_h11 as serve_h11
from ._server import serve_memory as serve_memory

__all__ = [
    "BodyMatcher",
    "H11Server",
    "HeadersMatcher",
    "Matcher",
    "MockCall",
    "MockInterceptor",
    "MockNotMatchedError",
    "MockPool",
    "MockReply",
    "MockScope",
    "QueryMatcher",
    "Script",
    "ServerConnection",
    "ServerRequest",
    "TaskStarter",
    "Tunnel",
    "serve_h11",
    "serve_memory",
]


def _publish_under_package_name() -> None:
    # As in trio_pool/__init__.py: reprs, tracebacks and the docs say
    # ``trio_pool.testing.MockPool``, the name users import it by.
    for value in list(globals().values()):
        if isinstance(value, type | _FunctionType) and value.__module__.startswith(f"{__name__}."):
            value.__module__ = __name__


_publish_under_package_name()
