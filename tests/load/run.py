"""`make loadtest`: the production stack on loopback, a seeded event, and locust against it.

    .venv/bin/python -m tests.load.run                                  # 30 users, spawn 5/s, 10 minutes
    .venv/bin/python -m tests.load.run --users 100 --spawn-rate 10 --run-time 3m
    make loadtest USERS=100 SPAWN_RATE=10 RUN_TIME=3m

Not collected by pytest. Everything is temporary and on loopback:

1. Event photos: `--photos` (500) JPEGs with real faces made deterministically from
   gallery/sample_photos by tests/load/seed.py, plus a second batch (`--batch`, 60) for
   the organizer to import during the run; kept under tests/load/results/photos/ so a
   later run reuses them.
2. A temporary directory for media, static files, the file cache and (SQLite) the
   database. PostgreSQL and Redis when reachable (LOAD_DATABASE_URL, default
   postgres://postgres@127.0.0.1:5432/postgres, and LOAD_REDIS_URL, default
   redis://127.0.0.1:6379/6): a scratch database `trouvaille_load_<pid>`, dropped at the
   end, and a unique cluster name whose Redis keys are deleted at the end (the whole
   Redis db is flushed only if it was empty before). SQLite and the ORM broker otherwise,
   or with `--backend sqlite`.
3. Production settings (DJANGO_DEBUG=0, a random secret, plain HTTP on loopback), then
   migrate, collectstatic, create_event (with an access code), `manage.py qcluster`,
   `import_photos --wait` of the event photos (indexed by the cluster), and gunicorn from
   gunicorn.conf.py on a free loopback port.
4. locust headless with tests/load/locustfile.py; once every user is spawned the
   organizer imports the second batch, which the cluster indexes during the run.
   Meanwhile psutil samples CPU and memory of the gunicorn, qcluster and locust trees.
5. Results in tests/load/results/<UTC time>-<users>u/: locust's report.html and CSVs,
   processes.json (CPU, memory), selfies.json (each selfie's outcome), summary.json and
   summary.md (per request type: count, failures, p50/p95/p99, and the targets).

Every process started here is stopped at the end (SIGTERM to its process group, SIGKILL
after 30 s), and the whole run is bounded by the run time plus `--budget` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.bench.machine import TreeSampler, busy_cores
from tests.load.seed import SELFIES, generate
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PY = str(BIN / "python")
RESULTS = ROOT / "tests" / "load" / "results"
SLUG = "load"
CODE = "2468"
STOP_GRACE = 30.0
P95_TARGET_MS = 300


def seconds(duration: str) -> int:
    """Locust's run-time syntax (1h30m, 10m, 180s, 90) in seconds."""
    parts = re.findall(r"(\d+)\s*([hms]?)", duration)
    if not parts:
        raise argparse.ArgumentTypeError(f"not a duration: {duration!r}")
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[unit] for n, unit in parts)


class Service:
    """A long-running process in its own process group, output to a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        # One SIGTERM to the parent: gunicorn and django-q2 stop their children themselves
        # (a second signal can deadlock django-q2's shutdown); SIGKILL to the group if stuck.
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


def manage(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


# --- Backends ---------------------------------------------------------------------------------


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _loopback(url: str) -> bool:
    return urlsplit(url).hostname in {"127.0.0.1", "localhost", "::1"}


def postgres_reachable(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def redis_client(url: str):
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError:
        return None
    return client


class Backends(contextlib.ExitStack):
    """DATABASE_URL and REDIS_URL for the run; scratch database and Redis keys removed on exit."""

    def __init__(self, choice: str, tmp: Path, cluster: str) -> None:
        super().__init__()
        self.env: dict[str, str] = {}
        self.name = "sqlite"
        pg_url = os.environ.get("LOAD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        redis_url = os.environ.get("LOAD_REDIS_URL", "redis://127.0.0.1:6379/6")
        for url in (pg_url, redis_url):
            if not _loopback(url):
                raise SystemExit(f"Only loopback servers are used by the load test: {url}")
        redis = redis_client(redis_url) if choice != "sqlite" else None
        if choice != "sqlite" and postgres_reachable(pg_url) and redis is not None:
            import psycopg

            scratch = f"trouvaille_load_{os.getpid()}"
            admin = pg_url.replace("postgres://", "postgresql://", 1)
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{scratch}"')

            def drop() -> None:
                with psycopg.connect(admin, autocommit=True) as connection:
                    connection.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')

            self.callback(drop)
            was_empty = redis.dbsize() == 0

            def clean_redis() -> None:
                if was_empty:
                    redis.flushdb()
                else:
                    for key in redis.scan_iter(f"*{cluster}*"):
                        redis.delete(key)

            self.callback(clean_redis)
            self.env = {"DATABASE_URL": _with_path(pg_url, f"/{scratch}"), "REDIS_URL": redis_url}
            self.name = "postgresql+redis"
        elif choice == "postgres":
            raise SystemExit(f"PostgreSQL ({pg_url}) or Redis ({redis_url}) is not reachable")
        else:
            self.env = {"DATABASE_URL": f"sqlite:///{tmp / 'load.sqlite3'}"}


# --- Results ----------------------------------------------------------------------------------


def read_stats(prefix: Path) -> list[dict]:
    rows = []
    with open(f"{prefix}_stats.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append(
                {
                    "type": row["Type"],
                    "name": row["Name"],
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "p50_ms": float(row["50%"] or 0),
                    "p95_ms": float(row["95%"] or 0),
                    "p99_ms": float(row["99%"] or 0),
                    "max_ms": float(row["Max Response Time"] or 0),
                    "rps": float(row["Requests/s"] or 0),
                }
            )
    return rows


def first_p95_over(prefix: Path, limit_ms: float) -> dict | None:
    """The first moment locust's rolling p95 of all requests passed limit_ms, with the users then."""
    with open(f"{prefix}_stats_history.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated" and row["95%"] not in ("", "N/A") and float(row["95%"]) > limit_ms:
                return {"users": int(row["User Count"]), "p95_ms": float(row["95%"]), "timestamp": row["Timestamp"]}
    return None


def summarize(out: Path, scenario: Scenario, facts: dict) -> dict:
    stats = read_stats(out / "locust")
    requests = [row for row in stats if row["name"] != "Aggregated"]
    total = next((row for row in stats if row["name"] == "Aggregated"), None)
    selfies = json.loads((out / "selfies.json").read_text()) if (out / "selfies.json").exists() else []
    states = Counter(outcome["state"] for outcome in selfies)
    unmatched = [outcome for outcome in selfies if outcome["state"] != "done" or not outcome["matches"]]
    recall = [min(1.0, outcome["matches"] / outcome["expected"]) for outcome in selfies if outcome.get("expected")]
    done_seconds = [outcome["seconds"] for outcome in selfies if outcome["state"] == "done"]
    failed_requests = sum(row["failures"] for row in requests)
    worst = max(requests, key=lambda row: row["p95_ms"]) if requests else None
    summary = {
        **facts,
        "users": scenario.users,
        "spawn_rate": scenario.spawn_rate,
        "run_time": scenario.run_time,
        "requests": total["requests"] if total else 0,
        "failed_requests": failed_requests,
        "per_request": requests,
        "aggregated": total,
        "rolling_p95_first_over_1s": first_p95_over(out / "locust", 1000),
        "selfies": {
            "total": len(selfies),
            "states": dict(states),
            "unmatched": len(unmatched),
            "recall_mean": round(sum(recall) / len(recall), 3) if recall else None,
            "seconds_to_done_p50": _percentile(done_seconds, 50),
            "seconds_to_done_p95": _percentile(done_seconds, 95),
            "seconds_to_done_max": _percentile(done_seconds, 100),
        },
        "worst_p95": {"name": worst["name"], "p95_ms": worst["p95_ms"]} if worst else None,
        "targets": {
            "no_failed_request": failed_requests == 0,
            f"every_p95_at_most_{P95_TARGET_MS}_ms": all(row["p95_ms"] <= P95_TARGET_MS for row in requests),
            "every_selfie_matched": bool(selfies) and not unmatched,
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# Load test {summary['date_utc']}: {scenario.users} users, spawn {scenario.spawn_rate}/s, "
        f"{scenario.run_time}",
        "",
        f"`{summary['command']}` on {summary['backend']}; {summary['photos_seeded']} photos seeded, "
        f"{summary['batch_photos']} more imported during the run.",
        "",
        "| type | name | requests | failures | p50 ms | p95 ms | p99 ms | max ms | req/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in stats:
        lines.append(
            f"| {row['type']} | {row['name']} | {row['requests']} | {row['failures']} | {row['p50_ms']:.0f} | "
            f"{row['p95_ms']:.0f} | {row['p99_ms']:.0f} | {row['max_ms']:.0f} | {row['rps']:.1f} |"
        )
    keys = ("selfies", "targets", "rolling_p95_first_over_1s", "batch", "server_errors_in_logs")
    lines += ["", "```", json.dumps({key: summary[key] for key in keys}, indent=2), "```"]
    lines += ["", "```", json.dumps({"machine": summary["machine"], "processes": summary["processes"]}, indent=2)]
    lines += ["```"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 1)


def server_errors(logs: list[Path]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for log in logs:
        if log.exists():
            text = log.read_text(errors="replace")
            counts["database is locked"] += text.count("database is locked")
            counts["Traceback"] += text.count("Traceback")
            counts['"level": "ERROR"'] += text.count('"level": "ERROR"')
    return dict(counts)


# --- The run ----------------------------------------------------------------------------------

DB_FACTS = """
import json
from collections import Counter
from gallery.models import Photo, Selfie, Match
photos = Photo.objects.filter(event__slug="load")
print(json.dumps({
    "photos": dict(Counter(photos.values_list("index_state", flat=True))),
    "batch": dict(Counter(photos.filter(original_name__startswith="batch").values_list("index_state", flat=True))),
    "selfies": dict(Counter(Selfie.objects.values_list("match_state", flat=True))),
    "matches": Match.objects.count(),
}))
"""


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


@dataclass
class Scenario:
    users: int
    spawn_rate: float
    run_time: str

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """USERS:SPAWN_RATE:RUN_TIME, e.g. 100:10:3m."""
        try:
            users, rate, run_time = text.split(":")
            scenario = cls(int(users), float(rate), run_time)
            seconds(run_time)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected USERS:SPAWN_RATE:RUN_TIME, got {text!r}") from exc
        return scenario


def db_facts(env: dict[str, str]) -> dict:
    return json.loads(manage(env, "shell", "-c", DB_FACTS).strip().splitlines()[-1])


def settle(env: dict[str, str], timeout: float) -> dict:
    """Wait (bounded) until no photo or selfie of the event is waiting for the cluster."""
    deadline = time.monotonic() + timeout
    facts = db_facts(env)
    while time.monotonic() < deadline and (
        set(facts["photos"]) & {"pending", "processing"} or set(facts["selfies"]) & {"pending", "matching"}
    ):
        time.sleep(5)
        facts = db_facts(env)
    return facts


def run_scenario(number: int, scenario: Scenario, args: argparse.Namespace, stack: dict, common: dict) -> dict:
    env, base, web, cluster = stack["env"], stack["base"], stack["web"], stack["cluster"]
    out = stack["out"] / f"{number}-{scenario.users}u-{scenario.run_time}"
    out.mkdir(parents=True, exist_ok=True)
    batch_dir = RESULTS / "photos" / f"batch-{args.seed + number}-{args.batch}"
    generate(batch_dir, args.batch, args.seed + 1000 + number, prefix=f"batch{number}")
    locust_env = {
        **os.environ,
        "LOAD_EVENT_SLUG": SLUG,
        "LOAD_EVENT_CODE": CODE,
        "LOAD_EXPECTED": str(stack["out"] / "expected.json"),
        "LOAD_SELFIE_SUMMARY": str(out / "selfies.json"),
        "LOAD_POLL_MAX": str(args.poll_max),
    }
    command = [
        str(BIN / "locust"),
        "-f",
        str(ROOT / "tests/load/locustfile.py"),
        "--headless",
        "--host",
        base,
        "--users",
        str(scenario.users),
        "--spawn-rate",
        str(scenario.spawn_rate),
        "--run-time",
        scenario.run_time,
        # Attendees still waiting for their photos when the time is up finish their visit.
        "--stop-timeout",
        str(args.poll_max + 30),
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "report.html"),
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]
    before = busy_cores(2.0)
    print(
        f"[{number}] machine busy before: {before} of {os.cpu_count()} cores. locust: {scenario.users} users, "
        f"spawn {scenario.spawn_rate}/s, {scenario.run_time}, against {base} ...",
        flush=True,
    )
    run_s = seconds(scenario.run_time)
    limit = run_s + args.poll_max + 30 + args.budget
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(out / "locust.log", "wb") as log:
        swarm = subprocess.Popen(command, cwd=ROOT, env=locust_env, stdout=log, stderr=subprocess.STDOUT)
        roots = {"web": web.pid, "cluster": cluster.pid, "locust": swarm.pid}
        with TreeSampler(roots, every=2.0) as sampler:
            # The organizer imports a new batch once every user has arrived.
            time.sleep(min(run_s / 2, scenario.users / scenario.spawn_rate))
            importer = subprocess.run(
                [PY, "manage.py", "import_photos", SLUG, str(batch_dir)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=limit,
            )
            try:
                swarm.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                print(f"[{number}] locust overran its budget and is stopped", flush=True)
            finally:
                if swarm.poll() is None:  # overran, or this run was interrupted
                    swarm.kill()
                    swarm.wait()
    # The batch and the last selfies must be done within the budget too; what is left is reported.
    facts = settle(env, 300)
    summary = summarize(
        out,
        scenario,
        {
            **common,
            "date_utc": started,
            "batch_import_rc": importer.returncode,
            "batch": facts,
            "server_errors_in_logs": server_errors([stack["out"] / "gunicorn.log", stack["out"] / "cluster.log"]),
            "machine": {
                "cores": os.cpu_count(),
                "busy_cores_before": before,
                "busy_cores_during": sampler.machine_cores,
                "loadavg_end": os.getloadavg(),
            },
            "processes": sampler.report(),
        },
    )
    print((out / "summary.md").read_text(), flush=True)
    return summary


def run(args: argparse.Namespace) -> int:
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    scenarios = [Scenario(args.users, args.spawn_rate, args.run_time), *args.then]
    out = Path(args.out) if args.out else RESULTS / f"{started.replace(':', '')}-{args.users}u"
    out.mkdir(parents=True, exist_ok=True)
    photos_dir = RESULTS / "photos" / f"event-{args.seed}-{args.photos}"
    print(f"Generating {args.photos} event photos (reused when already there) ...", flush=True)
    labels = generate(photos_dir, args.photos, args.seed, prefix="event")
    sample_labels = json.loads((ROOT / "gallery/sample_photos/labels.json").read_text())
    expected = {
        selfie: sum(1 for names in labels.values() if sample_labels[selfie]["people"][0] in names) for selfie in SELFIES
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1))

    cluster_name = f"load-{os.getpid()}"
    services: list[Service] = []
    failures = 0
    with (
        tempfile.TemporaryDirectory(prefix="trouvaille-load-") as tmp_name,
        Backends(args.backend, Path(tmp_name), cluster_name) as backends,
    ):
        tmp = Path(tmp_name)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            **backends.env,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "0",
            "SECURE_COOKIES": "0",
            "SITE_URL": base,
            "MEDIA_ROOT": str(tmp / "media"),
            "STATIC_ROOT": str(tmp / "static"),
            "CACHE_DIR": str(tmp / "cache"),
            "Q_CLUSTER_NAME": cluster_name,
            "Q_WORKERS": str(args.q_workers),
            "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}",  # over gunicorn.conf.py
        }
        if args.web_workers:
            env["WEB_CONCURRENCY"] = str(args.web_workers)
        try:
            print(f"Backend: {backends.name}; preparing the database and static files ...", flush=True)
            manage(env, "migrate", "--noinput", "-v", "0")
            manage(env, "collectstatic", "--noinput", "-v", "0")
            manage(env, "create_event", "Load test", "--slug", SLUG, "--code", CODE)
            cluster = Service("cluster", [PY, "manage.py", "qcluster"], env, out / "cluster.log")
            services.append(cluster)
            print(f"Indexing {args.photos} photos with the cluster ({args.q_workers} workers) ...", flush=True)
            t0 = time.perf_counter()
            manage(env, "import_photos", SLUG, str(photos_dir), "--wait", "--stall-timeout", "300", timeout=3600)
            seed_index_s = round(time.perf_counter() - t0, 1)
            seeded = db_facts(env)
            print(f"  indexed in {seed_index_s} s: {seeded['photos']}", flush=True)
            web = Service("web", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py"], env, out / "gunicorn.log")
            services.append(web)
            wait_http(f"{base}/healthz", 60)
            stack = {"env": env, "base": base, "web": web, "cluster": cluster, "out": out}
            common = {
                "command": args.command or " ".join(["python -m tests.load.run", *sys.argv[1:]]),
                "backend": backends.name,
                "photos_seeded": args.photos,
                "seeded_states": seeded["photos"],
                "seed_index_s": seed_index_s,
                "batch_photos": args.batch,
                "q_workers": args.q_workers,
                "web_concurrency": args.web_workers or "gunicorn.conf.py default",
            }
            summaries = []
            for number, scenario in enumerate(scenarios, 1):
                summary = run_scenario(number, scenario, args, stack, common)
                summaries.append(summary)
                failures += summary["failed_requests"] + summary["selfies"]["unmatched"]
        finally:
            for service in reversed(services):
                service.stop()
    (out / "summaries.json").write_text(json.dumps(summaries, indent=2))
    print(f"Results in {out}")
    return 0 if failures == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=int(os.environ.get("USERS", 30)))
    parser.add_argument("--spawn-rate", type=float, default=float(os.environ.get("SPAWN_RATE", 5)))
    parser.add_argument("--run-time", default=os.environ.get("RUN_TIME", "10m"), help="locust syntax: 10m, 180s")
    parser.add_argument(
        "--then",
        type=Scenario.parse,
        action="append",
        default=[],
        metavar="USERS:SPAWN_RATE:RUN_TIME",
        help="another scenario afterwards, on the same servers and event (repeatable)",
    )
    parser.add_argument("--photos", type=int, default=500, help="event photos indexed before the run")
    parser.add_argument("--batch", type=int, default=60, help="photos imported and indexed during the run")
    parser.add_argument("--seed", type=int, default=1, help="of the generated photos")
    parser.add_argument("--backend", choices=["auto", "sqlite", "postgres"], default="auto")
    parser.add_argument("--web-workers", type=int, help="WEB_CONCURRENCY (default: gunicorn.conf.py's)")
    parser.add_argument("--q-workers", type=int, default=2)
    parser.add_argument("--poll-max", type=int, default=180, help="seconds an attendee waits for its selfie")
    parser.add_argument("--budget", type=int, default=300, help="seconds allowed beyond the run time")
    parser.add_argument("--out", help="results folder (default tests/load/results/<time>-<users>u)")
    parser.add_argument("--command", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seconds(args.run_time)
    # `timeout` and CI stop with SIGTERM: clean up (servers, scratch database) as for Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(run(args))


if __name__ == "__main__":
    main()
