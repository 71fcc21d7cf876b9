"""Gunicorn settings for the Trouvaille web tier.

    gunicorn -c gunicorn.conf.py config.wsgi

Every value comes from an environment variable (all listed in .env.example), so
one file serves every machine; docs/deploy.md explains how they fit with nginx,
systemd and the database connection budget. Gunicorn reads this file in the
master process at start and again on SIGHUP; the environment itself is only read
at process start, so changing /etc/trouvaille/env needs a restart, not a reload.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

from gunicorn.glogging import Logger, SafeAtoms


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _cores() -> int:
    # The CPUs this process may run on (cpusets, taskset), not every CPU of the host.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --- Sockets ------------------------------------------------------------------

# Loopback by default: only the local TLS proxy talks to gunicorn. When the proxy
# runs on another machine, bind a private address (10.0.0.11:8000) and firewall it:
# Django trusts X-Forwarded-Proto from whoever can connect (SECURE_PROXY_SSL_HEADER).
# Comma-separated for several sockets, e.g. "unix:/run/trouvaille-web/gunicorn.sock".
bind = [address.strip() for address in _env_str("GUNICORN_BIND", "127.0.0.1:8000").split(",") if address.strip()]

# The application, so `gunicorn -c gunicorn.conf.py` alone also works.
wsgi_app = "config.wsgi:application"

# --- Workers ------------------------------------------------------------------

# Gunicorn's rule of thumb. A web worker never loads dlib (jobs do): it stays
# under 100 MB. Each worker is one process with its own database connections.
workers = _env_int("WEB_CONCURRENCY", 2 * _cores() + 1)

# gthread, not sync, even with one thread: its main loop keeps beating the
# heartbeat while a thread works, so a long admin upload (hundreds of photos
# hashed and stored in one request) is not killed by `timeout`, and connections
# from the proxy can be kept alive. Each thread holds its own persistent database
# connection (DATABASE_CONN_MAX_AGE): budget workers * threads per machine.
worker_class = "gthread"
threads = _env_int("GUNICORN_THREADS", 2)

# With gthread this is the worker liveness limit (a worker whose main loop is
# stuck this long is killed), not a per-request limit: request time is bounded
# by the proxy's proxy_read_timeout.
timeout = _env_int("GUNICORN_TIMEOUT", 30)

# On SIGTERM (systemd stop) or SIGHUP (reload), workers stop accepting and get
# this long to finish their requests before being killed. Keep systemd's
# TimeoutStopSec above it.
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)

# Seconds an idle keep-alive connection from the proxy stays open. It must be
# longer than the proxy's own idle timeout for upstream connections (nginx
# `keepalive_timeout` in the upstream block, an AWS ALB's idle timeout of 60 s),
# or the proxy may reuse a connection gunicorn is closing and answer 502.
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)

# Restart each worker after this many requests (plus 0..jitter, so workers do
# not all restart at once): bounds memory growth from image handling in uploads.
# 0 disables.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 1000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 100)

# The heartbeat is an fchmod() on a temporary file every second; on a disk-backed
# /tmp that call can block for seconds under I/O load and get healthy workers
# killed. /dev/shm is memory-backed. (Gunicorn creates the file with mkstemp
# and unlinks it at once, so a shared directory is safe.)
_SHM = "/dev/shm"  # noqa: S108
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None

# --- Proxy --------------------------------------------------------------------

# Addresses whose X-Forwarded-Proto gunicorn believes (it sets wsgi.url_scheme).
# The proxy's address: 127.0.0.1,::1 when it runs on this machine; its private
# address otherwise. "*" only if nothing but the proxy can reach the socket.
forwarded_allow_ips = _env_str("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Only the header the proxy sets and Django reads. Gunicorn's default also trusts
# X-Forwarded-Ssl and X-Forwarded-Protocol, which nginx passes through from the
# client untouched: a client sending "X-Forwarded-Ssl: off" would get a 400.
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# Gunicorn >= 25 opens a control socket for `gunicornc`, by default under $HOME,
# which a system user without a writable home cannot create. Put it in systemd's
# RuntimeDirectory= when there is one; GUNICORN_CONTROL_SOCKET=off disables it.
_control_socket = _env_str("GUNICORN_CONTROL_SOCKET", "")
if _control_socket.lower() == "off":
    control_socket_disable = True
elif _control_socket:
    control_socket = _control_socket
elif os.environ.get("RUNTIME_DIRECTORY"):
    control_socket = os.path.join(os.environ["RUNTIME_DIRECTORY"].split(":")[0], "gunicorn.ctl")

# --- Logging ------------------------------------------------------------------

# Access log on stdout, gunicorn's own messages on stderr; journald (or the
# container runtime) collects both. GUNICORN_ACCESSLOG=off turns the access log
# off (Django already logs one "request" line per view with its duration);
# a path writes to that file instead.
_accesslog = _env_str("GUNICORN_ACCESSLOG", "-")
accesslog = None if _accesslog.lower() == "off" else _accesslog
errorlog = "-"
loglevel = _env_str("GUNICORN_LOG_LEVEL", "info")

# Same switch as Django's logging (settings.LOG_FORMAT): JSON lines in
# production, gunicorn's usual text when debugging.
_debug = os.environ.get("DJANGO_DEBUG", "1").strip().lower() in {"1", "true", "yes", "on"}
_json_logs = _env_str("LOG_FORMAT", "text" if _debug else "json") == "json"


# An attendee's private link (/e/<slug>/me/<token>/) is a bearer credential: never logged.
_PRIVATE_LINK = re.compile(r"(/e/[^/\s]+/me/)[^/?\s]+/")


def _redact(value: object) -> object:
    return _PRIVATE_LINK.sub(r"\1<redacted>/", value) if isinstance(value, str) else value


class _RedactedAtoms(SafeAtoms):
    """The text access log's atoms, with private links redacted."""

    def __getitem__(self, key: str) -> str:
        return _redact(super().__getitem__(key))


class _JsonAtoms(dict):
    """Gunicorn's access-log atoms as JSON literals: strings quoted and escaped, numbers bare.

    Gunicorn's own wrapper only backslashes double quotes, so a user agent or
    path containing a backslash would break a JSON line. Absent values are null.
    Headers are looked up by lowercase name, as gunicorn stores them.
    """

    _NUMBERS = frozenset({"s", "B", "T", "D", "M"})

    def __getitem__(self, key: str) -> str:
        key = key.lower() if key.startswith("{") else key
        value = self.get(key)
        if value is None or value == "-":  # "-" is gunicorn's placeholder for absent
            return "null"
        if key in self._NUMBERS and str(value).isdigit():
            return str(int(value))
        return json.dumps(str(_redact(value)))


class _JsonFormatter(logging.Formatter):
    """Gunicorn's error log as the same JSON objects Django writes (config.logging)."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class JsonLogger(Logger):
    """One JSON object per line for both gunicorn logs, keyed like Django's logs."""

    atoms_wrapper_class = _JsonAtoms

    def now(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            if getattr(handler, "_gunicorn", False):
                handler.setFormatter(_JsonFormatter())


class TextLogger(Logger):
    atoms_wrapper_class = _RedactedAtoms


if _json_logs:
    logger_class = JsonLogger
    # Placeholders are filled with JSON literals by _JsonAtoms, so none is quoted here.
    # duration_ms and status are numbers, like the fields of Django's "request" line;
    # request_id is nginx's $request_id (X-Request-ID), null when absent.
    access_log_format = (
        '{"time": %(t)s, "level": "INFO", "logger": "gunicorn.access", "message": "access", '
        '"remote_addr": %(h)s, "forwarded_for": %({x-forwarded-for}i)s, "request_id": %({x-request-id}i)s, '
        '"method": %(m)s, "path": %(U)s, "query": %(q)s, "protocol": %(H)s, "status": %(s)s, '
        '"bytes": %(B)s, "duration_ms": %(M)s, "referer": %(f)s, "user_agent": %(a)s}'
    )
else:
    logger_class = TextLogger
    access_log_format = '%(h)s %({x-forwarded-for}i)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(f)s" "%(a)s"'
