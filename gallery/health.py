"""Reachability checks for /healthz: each answers "ok" or a short reason, never a secret."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection

logger = logging.getLogger("trouvaille.health")


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    if settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
    # The ORM broker is the database, checked above.


def _storage() -> None:
    # exists() is one HEAD request on S3 and one stat() locally.
    default_storage.exists("healthz")


def checks() -> dict[str, str]:
    results = {}
    for name, check in (("database", _database), ("broker", _broker), ("storage", _storage)):
        try:
            check()
            results[name] = "ok"
        except Exception as exc:
            logger.warning("health check %s failed", name, exc_info=True)
            results[name] = f"unreachable ({type(exc).__name__})"
    return results
