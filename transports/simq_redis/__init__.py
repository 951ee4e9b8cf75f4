"""simq's Redis plugin: a transport (``redis://`` broker URLs) and a result backend.

Installed with ``pip install 'simq[redis]'``; found through the
``simq.transports`` and ``simq.backends`` entry-point groups.
"""

from __future__ import annotations

from simq_redis.backend import RedisBackend, redis_backend_factory
from simq_redis.transport import RedisTransport, redis_transport_factory

__all__ = ["RedisBackend", "RedisTransport", "redis_backend_factory", "redis_transport_factory"]
