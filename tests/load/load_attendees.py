"""Load test: N attendees at once against gunicorn + a real qcluster with dlib.

Run from the project root (not collected by pytest; ~30-40 s per backend with 100 attendees,
at most --budget seconds, 300 by default):

    .venv/bin/python -m tests.load.load_attendees                       # 100 attendees: SQLite, then PostgreSQL + Redis
    .venv/bin/python -m tests.load.load_attendees --backends sqlite --with-import --json /tmp/load.json
    .venv/bin/python -m tests.load.load_attendees --attendees 300 --budget 400
    .venv/bin/python -m tests.load.load_attendees --attendees 20 --backends sqlite --keep  # keep temp dir + logs

For each backend, on loopback only, everything temporary:

1. A fresh temporary directory with MEDIA_ROOT, STATIC_ROOT, the file cache and
   (SQLite) the database file; for PostgreSQL a scratch database
   `trouvaille_load_<pid>` (created, dropped at the end) and Redis db 2 as broker
   and cache under a unique cluster name (its keys are deleted at the end).
2. Production-like settings: DJANGO_DEBUG=0, a random secret, ALLOWED_HOSTS
   127.0.0.1, SECURE_SSL_REDIRECT=0 and SECURE_COOKIES=0 (plain HTTP on loopback),
   collectstatic, migrate, `create_event`, then `manage.py qcluster` (Q_WORKERS=2)
   and `gunicorn config.wsgi -c gunicorn.conf.py -b 127.0.0.1:<free port> -w 3 --threads 4`.
3. `manage.py import_photos load <10 sample photos> --wait` (indexed by the cluster).
   One attendee then goes through the whole flow alone: the uncontended baseline.
4. N attendee threads (stdlib urllib + a cookie jar each) released together:
   GET the event page, take the CSRF token, POST a selfie (multipart, a real face
   photo from gallery/sample_photos/people, consent=on), GET /me/ (the redirect),
   poll /me/status every second until "done" or "failed" (at most 120 s after the
   POST), GET /me/ again and one thumbnail from it. With --with-import the
   organizer imports the other 13 labelled sample photos at the same moment
   (more writers: import, index jobs and re-matching alongside the selfie jobs).
5. Latency percentiles per endpoint, errors (non-2xx/3xx, timeouts, connection
   errors), selfie POST -> "done" times, matches found vs. expected, job durations
   from the cluster's log, and any "database is locked" / ERROR in the server logs.
6. Every process started here is stopped (SIGTERM to its process group, SIGKILL
   after 20 s) and the temporary files, database and Redis keys removed, in finally.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.cookiejar
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.machine import BusyMeter, busy_cores

ROOT = Path(__file__).resolve().parents[2]
PY = ROOT / ".venv" / "bin" / "python"
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
SAMPLES = ROOT / "gallery" / "sample_photos"
LABELS: dict[str, dict] = json.loads((SAMPLES / "labels.json").read_text())
SLUG = "load"
# Ten event photos: the three groups and seven single portraits.
EVENT_PHOTOS = [
    "groups/obama_and_biden.jpg",
    "groups/two_people.jpg",
    "groups/kit_with_rose.jpg",
    "people/obama/obama.jpg",
    "people/obama/obama3.jpg",
    "people/biden/biden.jpg",
    "people/kit_harington/kit3.jpg",
    "people/rose_leslie/rose2.jpg",
    "people/alex_lacamoire/alex2.jpg",
    "people/lin_manuel_miranda/lin1.png",
]
# Selfies: other photos of people who appear in the event photos.
SELFIES = [
    "people/obama/obama2.jpg",
    "people/biden/biden2.jpg",
    "people/kit_harington/kit1.jpg",
    "people/rose_leslie/rose1.jpg",
    "people/alex_lacamoire/alex1.jpg",
    "people/obama/obama4.jpg",
    "people/kit_harington/kit2.jpg",
]
REQUEST_TIMEOUT = 30.0  # seconds per HTTP request; more counts as a timeout error
POLL_EVERY = 1.0
POLL_MAX = 120.0  # seconds from the selfie POST to "done"
STOP_GRACE = 20.0
ENDPOINTS = ["event", "selfie POST", "me", "status", "me (done)", "thumbnail"]
EXTRA_PHOTOS = sorted(name for name in LABELS if name not in EVENT_PHOTOS)


def expected_matches(selfie: str) -> int:
    person = LABELS[selfie]["people"][0]
    return sum(1 for name in EVENT_PHOTOS if person in LABELS[name]["people"])


# --- Processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """A long-running process in its own process group, output to a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        self._log_handle = log.open("ab")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log_handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the parent (qcluster and gunicorn stop their children cleanly), then the group."""
        if self.alive():
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Anything left behind in the group (nothing, normally).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log_handle.close()


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PY), "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=True
    )


# --- One attendee -----------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # the 302 is timed on its own, then followed by hand
        return None


@dataclass
class Sample:
    endpoint: str
    ms: float
    status: int | None  # None: no HTTP answer (timeout, connection error)
    error: str = ""


@dataclass
class AttendeeResult:
    number: int
    selfie: str
    samples: list[Sample] = field(default_factory=list)
    state: str = ""
    matches: int | None = None
    post_to_done_s: float | None = None
    thumbnail_ok: bool = False
    aborted: str = ""


class Attendee:
    def __init__(self, number: int, base: str, selfie: str) -> None:
        self.base = base
        self.result = AttendeeResult(number=number, selfie=selfie)
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)
        self.selfie_bytes = (SAMPLES / selfie).read_bytes()

    def request(
        self, endpoint: str, path: str, data: bytes | None = None, headers: dict | None = None
    ) -> tuple[int | None, dict, bytes]:
        request = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        started = time.perf_counter()
        status, response_headers, body, error = None, {}, b"", ""
        try:
            with self.opener.open(request, timeout=REQUEST_TIMEOUT) as response:
                body = response.read()
                status, response_headers = response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:  # 3xx (redirects are not followed) and 4xx/5xx
            status, response_headers = exc.code, dict(exc.headers or {})
            body = exc.read() if exc.fp else b""
            if status >= 400:
                error = f"HTTP {status}"
        except TimeoutError:
            error = "timeout"
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            error = "timeout" if isinstance(reason, TimeoutError) else f"{type(reason).__name__}: {reason}"
        ms = (time.perf_counter() - started) * 1000
        self.result.samples.append(Sample(endpoint, ms, status, error))
        return (status if not error else None), response_headers, body

    def run(self, slug: str, start: threading.Barrier, deadline: float) -> AttendeeResult:
        try:
            start.wait(timeout=60)
            self._run(slug, deadline)
        except Exception as exc:  # a bug here must not hide the others' results
            self.result.aborted = f"{type(exc).__name__}: {exc}"
        return self.result

    def _run(self, slug: str, deadline: float) -> None:
        result = self.result
        status, _, body = self.request("event", f"/e/{slug}/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body or b"")
        if status != 200 or not token:
            result.aborted = "no event page / CSRF token"
            return
        boundary = uuid.uuid4().hex
        name = Path(result.selfie).name
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n'.encode()
            + token.group(1)
            + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="consent"\r\n\r\non\r\n'.encode(),
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + self.selfie_bytes
            + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        posted = time.monotonic()
        status, headers, _ = self.request(
            "selfie POST",
            f"/e/{slug}/selfie",
            data=b"".join(parts),
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Referer": f"{self.base}/e/{slug}/",
            },
        )
        if status != 302 or f"/e/{slug}/me/" not in headers.get("Location", ""):
            result.aborted = f"selfie POST answered {status}"
            return
        self.request("me", f"/e/{slug}/me/")
        poll_until = min(posted + POLL_MAX, deadline)
        while time.monotonic() < poll_until:
            time.sleep(POLL_EVERY)
            status, _, body = self.request("status", f"/e/{slug}/me/status")
            if status != 200:
                continue
            payload = json.loads(body)
            result.state, result.matches = payload["state"], payload["matches"]
            if payload["state"] in ("done", "failed"):
                result.post_to_done_s = time.monotonic() - posted
                break
        else:
            result.aborted = f"not done {POLL_MAX:.0f} s after the POST (last state {result.state or '?'})"
            return
        status, _, body = self.request("me (done)", f"/e/{slug}/me/")
        thumbnails = re.findall(rb'src="(/e/[^"]+/thumbnail\.jpg)"', body or b"")
        if thumbnails:
            status, headers, body = self.request("thumbnail", thumbnails[0].decode())
            result.thumbnail_ok = status == 200 and headers.get("Content-Type") == "image/jpeg" and len(body) > 0


# --- One backend ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, round(q / 100 * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def _json_lines(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    return rows


def scan_logs(logs: dict[str, Path]) -> dict:
    """Problems the servers logged, and job durations from the cluster's JSON log lines."""
    found: dict = {"database_is_locked": {}, "error_lines": {}, "first_errors": [], "jobs": {}}
    for name, path in logs.items():
        text = path.read_text(errors="replace") if path.exists() else ""
        found["database_is_locked"][name] = text.count("database is locked")
        errors = [
            line
            for line in text.splitlines()
            if '"level": "ERROR"' in line or '"level": "CRITICAL"' in line or "Traceback" in line
        ]
        found["error_lines"][name] = len(errors)
        found["first_errors"] += [f"{name}: {line[:400]}" for line in errors[:3]]
    for row in _json_lines(logs["qcluster"]):
        if row.get("job") in ("selfie_match", "photo_index") and "duration_ms" in row:
            found["jobs"].setdefault(row["job"], {}).setdefault(row.get("outcome", "?"), []).append(row["duration_ms"])
    server = {}
    for row in _json_lines(logs["gunicorn"]):
        if row.get("message") == "request" and "duration_ms" in row:
            path = row.get("path", "")
            kind = (
                "status"
                if path.endswith("/me/status")
                else "selfie POST"
                if path.endswith("/selfie")
                else "thumbnail"
                if path.endswith("thumbnail.jpg")
                else "me"
                if path.endswith("/me/")
                else "event"
                if path == f"/e/{SLUG}/"
                else "other"
            )
            server.setdefault(kind, []).append(row["duration_ms"])
    found["server_ms"] = {
        kind: {"n": len(v), "p50": percentile(v, 50), "p95": percentile(v, 95), "max": max(v)}
        for kind, v in server.items()
    }
    return found


def postgres_create(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')


def postgres_drop(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_cleanup(url: str, cluster: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"*{cluster}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    return len(keys)


def db_summary(env: dict[str, str]) -> dict:
    code = (
        "import json; from django.db.models import Count; from gallery.models import Selfie, Photo, Match; "
        "print(json.dumps({'selfies': dict(Selfie.objects.values_list('match_state').annotate(n=Count('id'))), "
        "'photos': dict(Photo.objects.values_list('index_state').annotate(n=Count('id'))), "
        "'matches': Match.objects.count()}))"
    )
    try:
        out = manage(env, "shell", "-c", code, timeout=60).stdout.strip().splitlines()[-1]
        return json.loads(out)
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": str(exc)}


def run_backend(backend: str, args: argparse.Namespace, budget_end: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"trouvaille-load-{backend}-"))
    cluster = f"load{os.getpid()}{backend[:2]}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "AWS_STORAGE_BUCKET_NAME", "JOBS_SYNC", "FACE_BACKEND"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(48),
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0",  # plain HTTP on loopback: Secure cookies would never be sent back
        SECURE_HSTS_SECONDS="0",
        MEDIA_ROOT=str(tmp / "media"),
        STATIC_ROOT=str(tmp / "static"),
        CACHE_DIR=str(tmp / "cache"),
        Q_CLUSTER_NAME=cluster,
        Q_WORKERS=str(args.q_workers),
        FACE_BACKEND="dlib",
        JOBS_SYNC="0",
        GUNICORN_CONTROL_SOCKET="off",
        GUNICORN_ACCESSLOG="off",  # Django logs one "request" line per view, with its duration
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    admin_url = args.postgres_admin_url.replace("postgres://", "postgresql://", 1)
    pg_name = f"trouvaille_load_{os.getpid()}"
    redis_url = args.redis_url
    if backend == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{tmp / 'db.sqlite3'}"
    else:
        base = admin_url.rsplit("/", 1)[0]
        env["DATABASE_URL"] = f"{base}/{pg_name}"
        env["REDIS_URL"] = redis_url
    logs = {"qcluster": tmp / "qcluster.log", "gunicorn": tmp / "gunicorn.log"}
    services: list[Service] = []
    report: dict = {"backend": backend, "attendees": args.attendees, "tmp": str(tmp)}
    started = time.monotonic()
    try:
        if backend == "postgres":
            postgres_create(admin_url, pg_name)
        print(f"[{backend}] migrate, collectstatic, create_event ...", flush=True)
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")
        manage(env, "create_event", "Load test", "--slug", SLUG)
        port = free_port()
        services.append(Service("qcluster", [str(PY), "manage.py", "qcluster"], env, logs["qcluster"]))
        gunicorn = [str(GUNICORN), "config.wsgi"]
        if (ROOT / "gunicorn.conf.py").exists():
            gunicorn += ["-c", str(ROOT / "gunicorn.conf.py")]
        gunicorn += ["-b", f"127.0.0.1:{port}", "-w", str(args.web_workers), "--threads", str(args.threads)]
        services.append(Service("gunicorn", gunicorn, env, logs["gunicorn"]))
        base = f"http://127.0.0.1:{port}"
        wait_until = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError, http.client.HTTPException):
                pass
            if time.monotonic() > wait_until or not all(service.alive() for service in services):
                raise RuntimeError(f"gunicorn did not become healthy; see {logs['gunicorn']}")
            time.sleep(0.5)
        print(f"[{backend}] importing {len(EVENT_PHOTOS)} photos with --wait ...", flush=True)
        t0 = time.monotonic()
        imported = manage(
            env,
            "import_photos",
            SLUG,
            *[str(SAMPLES / name) for name in EVENT_PHOTOS],
            "--wait",
            "--stall-timeout",
            "90",
            timeout=180,
        )
        report["import_wait_s"] = round(time.monotonic() - t0, 1)
        report["import_output"] = imported.stdout.strip().splitlines()[-1:]
        print(f"[{backend}] {' '.join(report['import_output'])} in {report['import_wait_s']} s", flush=True)

        # --- One attendee alone: the uncontended baseline ---
        alone = Attendee(-1, base, SELFIES[0])
        alone.run(SLUG, threading.Barrier(1), time.monotonic() + POLL_MAX)
        report["baseline"] = summarise([alone.result])
        print(f"[{backend}] baseline: one attendee alone, selfie -> done {alone.result.post_to_done_s} s", flush=True)

        # --- The attendees ---
        count = args.attendees
        barrier = threading.Barrier(count)
        deadline = min(budget_end, time.monotonic() + POLL_MAX + 60)
        attendees = [Attendee(i, base, SELFIES[i % len(SELFIES)]) for i in range(count)]
        threads = [threading.Thread(target=a.run, args=(SLUG, barrier, deadline), daemon=True) for a in attendees]
        importer: dict = {}
        if args.with_import:
            paths = [str(SAMPLES / name) for name in EXTRA_PHOTOS]

            def organizer() -> None:
                t = time.monotonic()
                try:
                    done = manage(env, "import_photos", SLUG, *paths, timeout=120)
                    importer.update(ok=True, output=done.stdout.strip().splitlines()[-1:])
                except subprocess.SubprocessError as exc:
                    importer.update(ok=False, output=str(exc), stderr=(getattr(exc, "stderr", "") or "")[-1000:])
                importer["s"] = round(time.monotonic() - t, 1)

            threads.append(threading.Thread(target=organizer, daemon=True))
        print(
            f"[{backend}] {count} attendees start together"
            + (f", while {len(EXTRA_PHOTOS)} more photos are imported" if args.with_import else "")
            + " ...",
            flush=True,
        )
        report["machine_busy_cores_before"] = busy_cores(1.0)  # the idle stack plus everything else
        meter = BusyMeter()
        client0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic() + REQUEST_TIMEOUT + 5))
        report["phase_s"] = round(time.monotonic() - t0, 1)
        report["machine_busy_cores"] = meter.cores_busy()
        client1 = resource.getrusage(resource.RUSAGE_SELF)
        report["client_cpu_s"] = round((client1.ru_utime - client0.ru_utime) + (client1.ru_stime - client0.ru_stime), 1)
        report["import_during"] = importer or None
        report["threads_unfinished"] = sum(thread.is_alive() for thread in threads)
        report.update(summarise([a.result for a in attendees], check_labels=not args.with_import))
        report["database"] = db_summary(env)
    except Exception as exc:
        report["setup_error"] = f"{type(exc).__name__}: {exc}"
        stderr = getattr(exc, "stderr", None)
        if stderr:
            report["setup_error"] += "\n" + stderr[-2000:]
        print(f"[{backend}] FAILED: {report['setup_error']}", flush=True)
    finally:
        for service in reversed(services):
            service.stop()
        report["services_exit"] = {service.name: service.process.returncode for service in services}
        report["logs"] = scan_logs(logs)
        if backend == "postgres":
            try:
                postgres_drop(admin_url, pg_name)
            except Exception as exc:
                report["cleanup_error"] = f"dropping {pg_name}: {exc}"
            try:
                report["redis_keys_deleted"] = redis_cleanup(redis_url, cluster)
            except Exception as exc:
                report["cleanup_error"] = f"redis: {exc}"
        if args.keep:
            print(f"[{backend}] kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        report["total_s"] = round(time.monotonic() - started, 1)
    return report


def summarise(results: list[AttendeeResult], check_labels: bool = True) -> dict:
    samples = [sample for result in results for sample in result.samples]
    endpoints = {}
    for endpoint in ENDPOINTS:
        mine = [sample for sample in samples if sample.endpoint == endpoint]
        if not mine:
            continue
        answered = [sample.ms for sample in mine if sample.status is not None]
        errors: dict[str, int] = {}
        for sample in mine:
            if sample.error:
                errors[sample.error] = errors.get(sample.error, 0) + 1
        endpoints[endpoint] = {
            "requests": len(mine),
            "errors": sum(errors.values()),
            "error_kinds": errors,
            "p50_ms": round(percentile(answered, 50), 1),
            "p95_ms": round(percentile(answered, 95), 1),
            "p99_ms": round(percentile(answered, 99), 1),
            "max_ms": round(max(answered), 1) if answered else None,
        }
    done = [result.post_to_done_s for result in results if result.post_to_done_s is not None]
    states: dict[str, int] = {}
    for result in results:
        states[result.state or "none"] = states.get(result.state or "none", 0) + 1
    wrong = [
        f"{result.number}:{Path(result.selfie).name} {result.matches}/{expected_matches(result.selfie)}"
        for result in results
        if check_labels and result.state == "done" and result.matches != expected_matches(result.selfie)
    ]
    aborted: dict[str, int] = {}
    for result in results:
        if result.aborted:
            aborted[result.aborted] = aborted.get(result.aborted, 0) + 1
    return {
        "endpoints": endpoints,
        "requests": len(samples),
        "errors": sum(1 for sample in samples if sample.error),
        "final_states": states,
        "post_to_done_s": {
            "n": len(done),
            "p50": round(percentile(done, 50), 1),
            "p95": round(percentile(done, 95), 1),
            "max": round(max(done), 1) if done else None,
            "mean": round(statistics.fmean(done), 1) if done else None,
        },
        "thumbnails_ok": sum(result.thumbnail_ok for result in results),
        "matches_not_as_labelled": wrong,
        "aborted": aborted,
    }


# --- Report ---------------------------------------------------------------------------------


def print_report(report: dict) -> None:
    print(f"\n## {report['backend']}: {report['attendees']} attendees\n")
    if "setup_error" in report:
        print(f"setup failed: {report['setup_error']}")
    if "baseline" in report:
        base = report["baseline"]
        print("One attendee alone (baseline), ms per request:")
        print(
            "  "
            + ", ".join(f"{name} {row['p50_ms']}" for name, row in base["endpoints"].items())
            + f"; selfie POST -> done {base['post_to_done_s']['max']} s, errors {base['errors']}\n"
        )
    if "endpoints" in report:
        print("| endpoint | requests | errors | p50 ms | p95 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, row in report["endpoints"].items():
            print(
                f"| {name} | {row['requests']} | {row['errors']} | {row['p50_ms']} | {row['p95_ms']} | "
                f"{row['p99_ms']} | {row['max_ms']} |"
            )
            if row["error_kinds"]:
                print(f"|   errors: {row['error_kinds']} | | | | | | |")
        done = report["post_to_done_s"]
        print(
            f"\nselfie POST -> done: n={done['n']}, p50 {done['p50']} s, p95 {done['p95']} s, max {done['max']} s; "
            f"final states {report['final_states']}; thumbnails fetched {report['thumbnails_ok']}; "
            f"phase {report['phase_s']} s; machine busy {report['machine_busy_cores']} cores "
            f"(before the burst {report['machine_busy_cores_before']}; "
            f"this load generator: {report['client_cpu_s']} CPU s)"
        )
        if report.get("import_during"):
            print(f"organizer import during the burst: {report['import_during']}")
        if report["aborted"]:
            print(f"attendees stopped early: {report['aborted']}")
        if report["matches_not_as_labelled"]:
            print(f"matches differing from labels.json: {report['matches_not_as_labelled'][:10]}")
        print(f"database afterwards: {report.get('database')}")
        print(f"import of {len(EVENT_PHOTOS)} photos (--wait): {report.get('import_wait_s')} s")
    logs = report.get("logs", {})
    if logs:
        jobs = {
            job: {
                outcome: f"n={len(v)} p50={percentile(v, 50):.0f} ms max={max(v):.0f} ms"
                for outcome, v in outcomes.items()
            }
            for job, outcomes in logs["jobs"].items()
        }
        print(f"jobs (cluster log): {jobs}")
        print(f"server-side request ms (Django log): {logs.get('server_ms')}")
        print(
            f"'database is locked' in logs: {logs['database_is_locked']}; ERROR/Traceback lines: {logs['error_lines']}"
        )
        for line in logs["first_errors"]:
            print(f"  {line}")
    print(f"services exit codes: {report.get('services_exit')}; total {report.get('total_s')} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attendees", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--q-workers", type=int, default=2)
    parser.add_argument("--postgres-admin-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    parser.add_argument("--budget", type=float, default=300, help="seconds for the whole script")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories (logs, media)")
    parser.add_argument(
        "--with-import", action="store_true", help="the organizer imports 13 more photos while the attendees arrive"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not GUNICORN.exists():
        sys.exit(f"{GUNICORN} not found: run `make venv` first")
    budget_end = time.monotonic() + args.budget
    reports = []
    for backend in [name.strip() for name in args.backends.split(",") if name.strip()]:
        if backend not in ("sqlite", "postgres"):
            sys.exit(f"unknown backend {backend!r}")
        if budget_end - time.monotonic() < 90:
            print(f"[{backend}] skipped: less than 90 s of the --budget left", flush=True)
            continue
        reports.append(run_backend(backend, args, budget_end))
    for report in reports:
        print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2, default=str))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
