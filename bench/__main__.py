"""Measure what the service costs on top of Flask and the database, in one run.

Every number is a ratio against a baseline measured in the same run (medians of
interleaved rounds), because these machines are noisy. Everything runs against
a PostgreSQL cluster of the benchmark's own, with pg_stat_statements, so the
database's own statistics can count the probes.

    make bench        (python -m bench; ROUNDS and SECONDS tune it)
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import psycopg2
import sqlalchemy as sa

from bench.frozen import frozen_budgets
from tests.faults import Gunicorn, PrivateCluster, Proxy

ROUNDS = int(os.environ.get("ROUNDS", "6"))  # even: each order as often
SECONDS = int(os.environ.get("SECONDS", "3"))
WORKERS = 2  # sync workers; gthread runs one worker of THREADS threads (two split wrk's connections unevenly)
THREADS = 4
CACHE_TTL = 5
HEALTH_TIMEOUT = 2.0
OPERATION_TIMEOUT = 5.0
DEFAULT_WORKERS = multiprocessing.cpu_count() * 2 + 1  # gunicorn.conf.py's count without WEB_CONCURRENCY
# The third: two sync workers wait on each other while they share a probe (SPEC 5), and on two
# cores that leaves CPU idle; gunicorn.conf.py's own worker count shows what a deployment sees.
MODELS = {"sync": (WORKERS, ("--worker-class", "sync")), "gthread": (1, ("--worker-class", "gthread", "--threads", str(THREADS))),
          f"sync x{DEFAULT_WORKERS}": (DEFAULT_WORKERS, ("--worker-class", "sync"))}
SECRET = "benchmark-secret-key-0123456789abcdefgh"
PROBE_MARK = "pg_stat_get_backend_idset"  # a word only our probe query contains


def wrk(url: str, headers: dict[str, str] | None = None, seconds: int = SECONDS) -> dict[str, float]:
    command = ["wrk", "-t1", "-c16", f"-d{seconds}s"]
    for key, value in (headers or {}).items():
        command += ["-H", f"{key}: {value}"]
    out = subprocess.run(command + [url], capture_output=True, text=True, timeout=seconds + 30).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(non2xx.group(1)) if non2xx else 0.0
    return result


def timed(server: Gunicorn, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        status = server.get(path, headers=headers, timeout=timeout)[0]
    except OSError:
        status = None
    return status, time.monotonic() - started


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        self.rows.append((name, value, target, verdict))
        print(f"  {name}: {value} {target} {verdict}", file=sys.stderr, flush=True)

    def print(self) -> None:
        widths = [max(len(row[i]) for row in self.rows + [("measure", "result", "target", "")]) for i in range(4)]
        line = "| " + " | ".join(h.ljust(w) for h, w in zip(("measure", "result", "target", ""), widths, strict=True)) + " |"
        print(line)
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in self.rows:
            print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")


def interleaved(measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """ROUNDS samples of each measure, each round running every measure once, in turn,
    so that a ratio of two measures can be taken within each round. Every other round
    runs them in reverse order, so that no measure always comes first, or always right
    after the database-bound ones (whose aftermath, on a 2-core machine, the next
    measure pays)."""
    samples: dict[str, list[float]] = {name: [] for name in measures}
    order = list(measures.items())
    for round_number in range(ROUNDS):
        for name, measure in order if round_number % 2 == 0 else reversed(order):
            samples[name].append(measure())
    return samples


def ratio(samples: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """The median over rounds of the ratio within each round: drifts of the machine cancel out."""
    return statistics.median(a / b for a, b in zip(samples[numerator], samples[denominator], strict=True))


def probe_cost(url: str) -> tuple[float, float]:
    """Median seconds of one primary probe (the light one, as most are) and of one raw
    psycopg2 SELECT 1, side by side."""
    from backend import create_app
    from backend.health.dialects import probe

    app = create_app({"APP_ENV": "testing", "DATABASE_URL": url, "DB_HEALTH_CHECK_INTERVAL": 0,
                      "INSTANCE_PATH": "/tmp/dbhealth-bench-instance"})
    raw = psycopg2.connect(url)
    raw.autocommit = True
    cursor = raw.cursor()
    ours, theirs = [], []
    with app.app_context():
        probe(None, HEALTH_TIMEOUT)
        for _ in range(10):
            for _ in range(100):
                started = time.perf_counter()
                probe(None, HEALTH_TIMEOUT, full=False)
                ours.append(time.perf_counter() - started)
                started = time.perf_counter()
                cursor.execute("SELECT 1")
                cursor.fetchone()
                theirs.append(time.perf_counter() - started)
    raw.close()
    return statistics.median(ours), statistics.median(theirs)


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    started_at = time.monotonic()
    table = Table()
    cluster = PrivateCluster(settings="shared_preload_libraries = 'pg_stat_statements'\n")
    proxy = Proxy(cluster.port)
    servers: list[Gunicorn] = []
    try:
        admin = sa.create_engine(cluster.url().replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("CREATE DATABASE bench")
        bench_admin = sa.create_engine(cluster.url(database="bench").replace("postgresql://", "postgresql+psycopg2://"),
                                       isolation_level="AUTOCOMMIT")
        with bench_admin.connect() as connection:
            connection.exec_driver_sql("CREATE EXTENSION pg_stat_statements")
        direct = cluster.url(database="bench")
        through_proxy = cluster.url(proxy.port, "bench")
        env = {"APP_ENV": "production", "JWT_SECRET_KEY": SECRET, "DB_HEALTH_CACHE_TTL": str(CACHE_TTL),
               "DB_HEALTH_TIMEOUT": str(HEALTH_TIMEOUT), "INSTANCE_PATH": "/tmp/dbhealth-bench-instance"}
        subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], check=True,
                       env={**os.environ, **env, "DATABASE_URL": direct, "LOG_LEVEL": "WARNING"})
        token = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "auth", "issue-token", "bench", "--role", "viewer"],
                               check=True, capture_output=True, text=True,
                               env={**os.environ, **env, "DATABASE_URL": direct, "LOG_LEVEL": "WARNING"}).stdout.strip()
        viewer = {"Authorization": f"Bearer {token}"}
        admin_token = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "auth", "issue-token", "bench", "--role", "admin"],
            check=True, capture_output=True, text=True,
            env={**os.environ, **env, "DATABASE_URL": direct, "LOG_LEVEL": "WARNING"}).stdout.strip()
        admin = {"Authorization": f"Bearer {admin_token}"}

        def serve(env: dict[str, str], app: str | None = None, model: str = "sync") -> Gunicorn:
            workers, extra = MODELS[model]
            server = Gunicorn(env, workers=workers, extra=(*extra, app) if app else extra,
                              ready_path="/hello" if app else "/livez")
            servers.append(server)
            return server

        print("throughput (wrk, 1 thread, 16 keep-alive connections)...", file=sys.stderr)
        rps: dict[str, float] = {}
        for model in MODELS:
            ours = serve({**env, "DATABASE_URL": direct}, model=model)
            baseline = serve({"DATABASE_URL": direct}, "bench.peers:baseline_app()", model=model)
            ours.get("/api/database/health", headers=viewer)
            urls = {
                "livez": (ours.url + "/livez", None),
                "hello": (baseline.url + "/hello", None),
                "cached": (ours.url + "/api/database/health", viewer),
                "forced": (ours.url + "/api/database/health?force=true", viewer),
                "select1": (baseline.url + "/select1", None),
            }
            if model == "sync":
                healthz = serve({"DATABASE_URL": direct}, "bench.peers:healthz_app()")
                urls["healthz"] = (healthz.url + "/healthz/ready", None)
            measures = {name: functools.partial(lambda url, headers: wrk(url, headers)["rps"], *where)
                        for name, where in urls.items()}
            rounds = interleaved(measures)
            rps.update({f"{name}_{model}": statistics.median(values) for name, values in rounds.items()})
            print(f"  req/s by round, {model}:", {name: [round(value) for value in values] for name, values in rounds.items()},
                  file=sys.stderr)
            workers = MODELS[model][0]
            shape = f"1 gthread worker x {THREADS}" if model == "gthread" else f"{workers} sync workers"
            floor = ratio(rounds, "livez", "hello")
            table.add(f"1. /livez vs a bare Flask hello app, {shape}",
                      f"{floor:.3f}x ({rps[f'livez_{model}']:.0f} vs {rps[f'hello_{model}']:.0f} req/s)", ">= 0.9x", floor >= 0.9)
            cached = ratio(rounds, "cached", "livez")
            table.add(f"2. cached /health with JWT vs /livez, {model}", f"{cached:.3f}x", ">= 0.85x", cached >= 0.85)
            forced, naive = ratio(rounds, "forced", "livez"), ratio(rounds, "select1", "hello")
            table.add(f"3. forced /health : /livez vs naive SELECT 1 : hello, {model}", f"{forced:.3f}x vs {naive:.3f}x",
                      ">= the naive app's", forced >= naive)
            if model != "sync":
                for server in (ours, baseline):
                    server.stop(quick=True)
        ours, baseline = servers[0], servers[1]  # the sync ones, for what follows

        ours_probe, raw_select = probe_cost(direct)
        cost = ours_probe / raw_select
        table.add("4. one probe in-process vs raw psycopg2 SELECT 1",
                  f"{cost:.2f}x ({ours_probe * 1e6:.0f} vs {raw_select * 1e6:.0f} us, +{(ours_probe - raw_select) * 1e6:.0f} us)",
                  "<= 2x", cost <= 2.0)

        with bench_admin.connect() as connection:
            connection.exec_driver_sql("SELECT pg_stat_statements_reset()")
        flood = wrk(ours.url + "/api/database/health", viewer, seconds=10)
        with bench_admin.connect() as connection:
            probes = connection.exec_driver_sql(
                f"SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%%{PROBE_MARK}%%' "
                f"AND query NOT LIKE '%%pg_stat_statements%%'"
            ).scalar()
            statements = connection.exec_driver_sql(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query NOT LIKE '%%pg_stat_statements%%'"
            ).scalar()
        allowed = WORKERS * (10 / CACHE_TTL + 1)
        table.add("5. probes during a 10 s cached flood (pg_stat_statements)",
                  f"{probes} probes, {statements} statements in all, {flood['rps'] * 10:.0f} requests",
                  f"<= {allowed:.0f}", probes <= allowed)

        rss = {name: statistics.mean(rss_kb(pid) for pid in server.worker_pids()) for name, server in
               (("ours", ours), ("baseline", baseline))}
        memory = rss["ours"] / rss["baseline"]
        table.add("8. RSS per worker after the load vs bare app", f"{memory:.2f}x ({rss['ours'] / 1024:.0f} vs {rss['baseline'] / 1024:.0f} MiB)",
                  "<= 1.5x", memory <= 1.5)

        print("a fresh worker in front of a frozen database...", file=sys.stderr)
        frozen_env = {**env, "DATABASE_URL": through_proxy, "DB_HEALTH_CACHE_TTL": "0"}
        budgets = {"op": OPERATION_TIMEOUT + 1, "health": HEALTH_TIMEOUT + 0.5}
        for model, answers in frozen_budgets(lambda model: serve(frozen_env, model=model), proxy, admin, budgets).items():
            shown = ", ".join(f"{label} {status} in {seconds:.2f} s" for label, status, seconds, _ in answers)
            held = all(seconds <= budget and status in (503, 200) for _, status, seconds, budget in answers)
            table.add(f"6c. frozen database, a fresh {model} worker's first requests", shown,
                      f"<= {budgets['op']:g} s (health, status {budgets['health']:g} s)", held)

        print("frozen database and recovery...", file=sys.stderr)
        frozen = serve({**env, "DATABASE_URL": through_proxy})
        frozen.get("/api/database/health?force=true", headers=viewer)
        proxy.set_mode("blackhole")
        answers: dict[str, tuple[int | None, float]] = {}
        asker = threading.Thread(target=lambda: answers.update(forced=timed(frozen, "/api/database/health?force=true", viewer)))
        asker.start()
        livez = []
        while asker.is_alive():  # what a liveness probe sees meanwhile, one request after another
            livez.append(timed(frozen, "/livez")[1] * 1000)
        asker.join()
        livez_p99 = statistics.quantiles(livez, n=100)[98] if len(livez) > 1 else livez[0]
        status, elapsed = answers["forced"]
        table.add("6a. forced /health on a frozen database", f"{status} in {elapsed:.2f} s",
                  f"<= {HEALTH_TIMEOUT + 0.5:.1f} s", status == 503 and elapsed <= HEALTH_TIMEOUT + 0.5)
        table.add("6b. /livez p99 meanwhile", f"{livez_p99:.1f} ms ({len(livez)} requests)", "< 50 ms", livez_p99 < 50)
        proxy.set_mode("pass")

        cluster.stop()
        assert timed(ours, "/api/database/health?force=true", viewer)[0] == 503
        cluster.start()  # pg_ctl -w: returns once the server accepts connections
        back = time.monotonic()
        while timed(ours, "/api/database/health?force=true", viewer)[0] != 200:
            time.sleep(0.01)
        recovery = time.monotonic() - back
        table.add("7. database accepting again -> first healthy forced probe", f"{recovery:.3f} s", "<= 1 s", recovery <= 1.0)

        print("flask-healthz on the frozen database...", file=sys.stderr)
        peer = serve({"DATABASE_URL": through_proxy}, "bench.peers:healthz_app()")
        peer.get("/healthz/ready")
        proxy.set_mode("blackhole")
        cap = 10.0
        status, elapsed = timed(peer, "/healthz/ready", timeout=cap)
        hung = [threading.Thread(target=timed, args=(peer, "/healthz/ready"), kwargs={"timeout": cap}) for _ in range(2)]
        for thread in hung:
            thread.start()
        time.sleep(0.5)
        hello_status, hello = timed(peer, "/hello", timeout=cap)
        proxy.set_mode("pass")
        peer_ratio = rps["healthz_sync"] / rps["livez_sync"]
        table.add("9a. flask-healthz readiness req/s vs our /livez, sync", f"{peer_ratio:.2f}x ({rps['healthz_sync']:.0f} req/s)",
                  f"ours forced: {rps['forced_sync'] / rps['livez_sync']:.2f}x")
        table.add("9b. flask-healthz on the frozen database",
                  f"no answer in {cap:.0f} s" if status is None else f"{status} in {elapsed:.2f} s",
                  f"ours: {answers['forced'][1]:.2f} s")
        table.add("9c. flask-healthz /hello while two probes hang",
                  f"no answer in {cap:.0f} s" if hello_status is None else f"{hello_status} in {hello:.2f} s",
                  f"ours /livez p99: {livez_p99:.1f} ms")
        for thread in hung:
            thread.join()
    finally:
        for server in servers:
            server.stop(quick=True)
        proxy.close()
        cluster.close()

    print()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{WORKERS} (and {DEFAULT_WORKERS}) sync gunicorn workers or 1 gthread worker x {THREADS}, PostgreSQL (private cluster), "
          f"{ROUNDS} rounds of {SECONDS} s, "
          f"total {time.monotonic() - started_at:.0f} s")
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
