"""Test helpers for code that uses ``trio_pool``: a mock dispatcher and scripted servers.

* :class:`MockPool` answers declared routes with no sockets at all: hand it to application
  code that takes a ``Pool`` (or any :class:`trio_pool.Dispatcher`).
* :func:`serve_h11` and :func:`serve_memory` run a scripted HTTP/1.1 server on h11 (on
  loopback TCP, or over in-memory streams) for testing against real protocol traffic.

See the "Testing" page of the documentation for worked examples.
"""

from ._mock import BodyMatcher as BodyMatcher
from ._mock import HeadersMatcher as HeadersMatcher
from ._mock import Matcher as Matcher
from ._mock import MockCall as MockCall
from ._mock import MockInterceptor as MockInterceptor
from ._mock import MockNotMatchedError as MockNotMatchedError
from ._mock import MockNotSupportedError as MockNotSupportedError
from ._mock import MockPool as MockPool
from ._mock import MockReply as MockReply
from ._mock import MockScope as MockScope
from ._mock import QueryMatcher as QueryMatcher
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
    "MockNotSupportedError",
    "MockPool",
    "MockReply",
    "MockScope",
    "QueryMatcher",
    "Script",
    "ServerConnection",
    "ServerRequest",
    "TaskStarter",
    "serve_h11",
    "serve_memory",
]


def _publish_under_package_name() -> None:
    # As in trio_pool/__init__.py: reprs, tracebacks and the docs say
    # ``trio_pool.testing.MockPool``, the name users import it by.
    for value in list(globals().values()):
        if isinstance(value, type) and value.__module__.startswith(f"{__name__}."):
            value.__module__ = __name__


_publish_under_package_name()
