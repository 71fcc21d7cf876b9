"""Gunicorn settings for the Trouvaille web tier: only what differs from gunicorn's defaults.

    gunicorn -c gunicorn.conf.py

Gunicorn reads WEB_CONCURRENCY (workers), FORWARDED_ALLOW_IPS (proxies whose
X-Forwarded-Proto it believes; default 127.0.0.1,::1) and GUNICORN_CMD_ARGS itself;
GUNICORN_CMD_ARGS overrides this file, e.g. "--bind 10.0.0.11:8000 --threads 4".
docs/deploy.md explains how the values fit with nginx, systemd and the database
connection budget. Logs use the application's configuration (config/logging.py):
same format, same token redaction.
"""

from __future__ import annotations

import os

from config import settings as app_settings

wsgi_app = "config.wsgi:application"

# Loopback: only the local TLS proxy talks to gunicorn (explicit, because gunicorn
# would listen on every interface if a PORT variable happened to be set).
bind = ["127.0.0.1:8000"]

if "WEB_CONCURRENCY" not in os.environ:
    # Gunicorn's rule of thumb, on the CPUs this process may use (cpusets, taskset).
    # A web worker never loads dlib (jobs do): it stays under 100 MB.
    workers = 2 * len(os.sched_getaffinity(0)) + 1

# gthread, not sync: its main loop keeps beating the heartbeat while a thread works,
# so a long admin upload is not killed by `timeout`, and the proxy's keep-alive
# connections are kept. Each thread holds its own persistent database connection
# (DATABASE_CONN_MAX_AGE): budget workers x threads per machine.
worker_class = "gthread"
threads = 2

# Longer than nginx's upstream keepalive_timeout (4 s in docs/deploy.md), or nginx
# may reuse a connection gunicorn is closing and answer 502. Behind an AWS ALB
# (60 s idle timeout) use --keep-alive 65.
keepalive = 5

# Replace each worker after about 1000 requests: bounds memory growth from images.
max_requests = 1000
max_requests_jitter = 100

# The heartbeat is an fchmod() every second; on a disk-backed /tmp it can block under
# I/O load and get healthy workers killed. /dev/shm is memory-backed.
if os.path.isdir("/dev/shm"):  # noqa: S108 - gunicorn unlinks the file at once
    worker_tmp_dir = "/dev/shm"  # noqa: S108

# Only the header the proxy sets and Django reads. Gunicorn's default also trusts
# X-Forwarded-Ssl and X-Forwarded-Protocol, which nginx passes through from the
# client: a client sending "X-Forwarded-Ssl: off" would get a 400.
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# The control socket for gunicornc goes in systemd's RuntimeDirectory= (a system
# user has no writable home); --no-control-socket turns it off.
if os.environ.get("RUNTIME_DIRECTORY"):
    control_socket = os.path.join(os.environ["RUNTIME_DIRECTORY"].split(":")[0], "gunicorn.ctl")

# Access and error lines through the application's own logging configuration: the
# same JSON (or text) lines as Django's and the jobs', private-link tokens redacted.
# (Importing the settings module also refuses unsafe production settings at once.)
logconfig_dict = app_settings.LOGGING
if not app_settings.env_bool("GUNICORN_ACCESSLOG", True):
    # Off: no line per HTTP request (with the client's address); Django's "request"
    # line per view (path, status, duration, no address) remains.
    off = {"handlers": [], "propagate": False}
    logconfig_dict = {**logconfig_dict, "loggers": {**logconfig_dict["loggers"], "gunicorn.access": off}}
