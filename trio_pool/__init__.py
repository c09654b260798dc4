"""trio_pool: Trio-native, structured-concurrency pools.

HTTP/1.1 connection pools on h11 (``Client``, ``Pool``, ``BalancedPool``) and a generic
resource pool (``ResourcePool``, ``Cluster``). Every public name is re-exported here.
"""

from types import FunctionType as _FunctionType

from . import interceptors as interceptors
from ._errors import AcquireTimeoutError as AcquireTimeoutError
from ._errors import BalancedPoolMissingUpstreamError as BalancedPoolMissingUpstreamError
from ._errors import BodyTimeoutError as BodyTimeoutError
from ._errors import ClientClosedError as ClientClosedError
from ._errors import ClientDestroyedError as ClientDestroyedError
from ._errors import ConnectError as ConnectError
from ._errors import ConnectTimeoutError as ConnectTimeoutError
from ._errors import HeadersOverflowError as HeadersOverflowError
from ._errors import HeadersTimeoutError as HeadersTimeoutError
from ._errors import HTTPParserError as HTTPParserError
from ._errors import InformationalError as InformationalError
from ._errors import InvalidArgumentError as InvalidArgumentError
from ._errors import MaxOriginsReachedError as MaxOriginsReachedError
from ._errors import NoCapablePoolError as NoCapablePoolError
from ._errors import PoolBailedError as PoolBailedError
from ._errors import PoolDestroyedError as PoolDestroyedError
from ._errors import PoolEndingError as PoolEndingError
from ._errors import PoolFullError as PoolFullError
from ._errors import ProxyError as ProxyError
from ._errors import RequestAbortedError as RequestAbortedError
from ._errors import RequestContentLengthMismatchError as RequestContentLengthMismatchError
from ._errors import RequestTimeoutError as RequestTimeoutError
from ._errors import ResponseContentLengthMismatchError as ResponseContentLengthMismatchError
from ._errors import ResponseDecodeError as ResponseDecodeError
from ._errors import ResponseExceededMaxSizeError as ResponseExceededMaxSizeError
from ._errors import ResponseStatusError as ResponseStatusError
from ._errors import SocketError as SocketError
from ._errors import TooManyRedirectsError as TooManyRedirectsError
from ._errors import TrioPoolError as TrioPoolError
from ._version import __version__ as __version__
from .http._agent import Agent as Agent
from .http._agent import AgentStats as AgentStats
from .http._balanced import BalancedPool as BalancedPool
from .http._client import Client as Client
from .http._headers import Headers as Headers
from .http._interface import Dispatcher as Dispatcher
from .http._models import PoolStats as PoolStats
from .http._models import RequestOptions as RequestOptions
from .http._models import Response as Response
from .http._models import StreamResponse as StreamResponse
from .http._origin import Origin as Origin
from .http._pool import Pool as Pool
from .http._proxy import EnvHttpProxyAgent as EnvHttpProxyAgent
from .http._proxy import ProxyAgent as ProxyAgent
from .http._trace import RequestTrace as RequestTrace
from .interceptors._compose import compose as compose
from .resources._backoff import Backoff as Backoff
from .resources._cluster import Cluster as Cluster
from .resources._pool import ResourcePool as ResourcePool
from .resources._pool import ResourcePoolStats as ResourcePoolStats


def _publish_under_package_name() -> None:
    # Public classes live in private modules; give them the name users import them by, so
    # reprs, tracebacks, pickles and the docs say ``trio_pool.Pool``, not ``trio_pool.http._pool``.
    for value in list(globals().values()):
        if isinstance(value, type | _FunctionType) and value.__module__.startswith("trio_pool."):
            value.__module__ = __name__


_publish_under_package_name()
