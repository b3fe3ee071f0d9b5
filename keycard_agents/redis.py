"""Redis as the shared store of many replicas of agents and of the token service.

Needs the optional extra: ``pip install keycard-agents[redis]`` (coredis, which runs on
asyncio and trio and speaks to a single Redis or a Redis Cluster). One setting selects
it: ``KEYCARD_REDIS_URL`` (or the ``[redis]`` section of the token service's TOML, or
a store passed in code). See docs/replicas.md.

Importing ``keycard_agents`` never imports this module or coredis.
"""

from __future__ import annotations

from keycard_agents._errors import ConfigurationError as _ConfigurationError


class RedisNotInstalledError(_ConfigurationError, ImportError):
    """coredis is not installed (install ``keycard-agents[redis]``)."""


try:
    import coredis as _coredis  # noqa: F401 - probe for the optional dependency
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise RedisNotInstalledError(
        "keycard_agents.redis needs coredis: install keycard-agents[redis]", setting="redis"
    ) from _exc

from keycard_agents._errors import StoreUnavailableError as StoreUnavailableError  # noqa: E402
from keycard_agents._redis._connection import REDIS_URL_ENV as REDIS_URL_ENV  # noqa: E402
from keycard_agents._redis._connection import RedisConnection as RedisConnection  # noqa: E402
from keycard_agents._redis._connection import RedisSettings as RedisSettings  # noqa: E402
from keycard_agents._redis._connection import open_redis as open_redis  # noqa: E402
from keycard_agents._redis._connection import (  # noqa: E402
    settings_from_env as settings_from_env,
)
from keycard_agents._redis._sts_state import RedisAuditStore as RedisAuditStore  # noqa: E402
from keycard_agents._redis._sts_state import (  # noqa: E402
    RedisServiceState as RedisServiceState,
)
from keycard_agents._redis._sts_state import RedisVaultStore as RedisVaultStore  # noqa: E402
from keycard_agents._redis._tasks import RUNNER_LOST as RUNNER_LOST  # noqa: E402
from keycard_agents._redis._tasks import RedisTaskStore as RedisTaskStore  # noqa: E402
from keycard_agents._redis._tasks import (  # noqa: E402
    TaskStoreUnavailableError as TaskStoreUnavailableError,
)
from keycard_agents._redis._token_cache import CACHE_KEY_ENV as CACHE_KEY_ENV  # noqa: E402
from keycard_agents._redis._token_cache import RedisTokenCache as RedisTokenCache  # noqa: E402

__all__ = [
    "CACHE_KEY_ENV",
    "REDIS_URL_ENV",
    "RUNNER_LOST",
    "RedisAuditStore",
    "RedisConnection",
    "RedisNotInstalledError",
    "RedisServiceState",
    "RedisSettings",
    "RedisTaskStore",
    "RedisTokenCache",
    "RedisVaultStore",
    "StoreUnavailableError",
    "TaskStoreUnavailableError",
    "open_redis",
    "settings_from_env",
]
