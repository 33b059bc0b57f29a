"""Production defaults for `gunicorn wsgi:app`; each can be overridden on the command line.

Workers are gthread with 4 threads: a thread waiting on a database (at most its
request's deadline) leaves the others, and /livez, free. sync works too; gevent
and eventlet do not (the deadline watchdog is a real thread that a greenlet
worker never lets run) and stop start-up with one line.

Connections per worker and database: DB_POOL_SIZE defaults to the worker's
threads with no overflow (one request thread uses one pooled connection at a
time, and a sync worker opens only the one it uses), plus the kept-open
connection (probes and the service's own reads) and the console's: at most
threads + 2, so 6 with the defaults (README, "Behind pgbouncer").

The app writes its own access log (one line per request, with route, identity
and request id) to stdout, so gunicorn's access log is off; gunicorn's error log
goes to stderr, as JSON when LOG_FORMAT=json.
"""
import gc
import importlib
import multiprocessing
import os
import re
import secrets
import shlex
import shutil
import socket
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # so the master finds backend.logs

wsgi_app = "wsgi:app"
bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
SYNC_WORKERS = ("sync", "gunicorn.workers.sync.SyncWorker")
SUPPORTED_WORKERS = (*SYNC_WORKERS, "gthread", "gunicorn.workers.gthread.ThreadWorker")


def _requested_worker_class() -> str:
    """The class asked for with -k / --worker-class or GUNICORN_CMD_ARGS, else ours.

    Checked here, as the master reads this file, so that an unsupported class stops
    start-up with one line before gunicorn tries to import it.
    """
    from gunicorn.config import Config

    given = shlex.split(os.environ.get("GUNICORN_CMD_ARGS", "")) + sys.argv[1:]
    return Config().parser().parse_known_args(given)[0].worker_class or worker_class


# gunicorn turns a sync worker with threads > 1 into gthread: -k sync gets one thread
# (--threads N on the command line still wins, and then gunicorn's rule applies).
_requested = _requested_worker_class()
threads = 1 if _requested in SYNC_WORKERS else 4

if _requested not in SUPPORTED_WORKERS:
    raise SystemExit(
        f"error: gunicorn worker class {_requested!r} is not supported, use gthread (the default) "
        "or sync: the database deadline watchdog is a thread that greenlet workers never run"
    )
timeout = 30  # a worker stuck longer than this is replaced
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then (a guard against slow leaks), spread out by the jitter. A recycle
# costs this service ~50-100 ms of CPU (fork, copy-on-write of the inherited heap, its first
# connections and caches): at 10000 requests that was ~10-18 us a request under load.
max_requests = 100000
max_requests_jitter = 10000
control_socket_disable = True  # one fixed path per user would clash between servers on one host
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

if os.environ.get("LOG_FORMAT", "text").lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "backend.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": [], "level": loglevel.upper()},  # the app installs its own
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False},
            "gunicorn.access": {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False},
        },
    }

# One instance id for every worker of this server: chosen here, in the master,
# before it forks (backend/config.py validates it; the same shape as its default).
os.environ.setdefault("INSTANCE_ID", f"{socket.gethostname().split('.')[0][:57] or 'host'}-{secrets.token_hex(3)}")

# Prometheus multiprocess mode: every worker writes its samples to files in this
# folder and /metrics adds them up. It must be set before a worker imports the app.
# Unset, a new private folder is made for this run and removed at exit. Chosen by the
# operator, it is theirs: nothing in it is deleted but the files this server wrote
# (named <kind>_<pid>.db by prometheus_client, for the master's and its workers' pids).
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="dbhealth-metrics-")
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
_metrics_pids = {os.getpid()}  # the master imports prometheus_client (below), and may write some too
_METRICS_FILE = re.compile(r"[a-z_]+_(\d+)\.db")
LIBRARIES = ("flask", "flask_sqlalchemy", "flask_jwt_extended", "flask_limiter", "flask_migrate", "sqlalchemy.orm",
             "prometheus_client", "tenacity", "psycopg2", "pymysql")


def on_starting(server):
    """Import the libraries once, in the master, and no more: a worker forked from it, at start
    and at every max_requests recycle, then imports only the service's own code (~40 ms) instead
    of everything (~0.5 s, while a lone gthread worker serves nothing). The service's code is not
    imported here, so a HUP still loads a new version of it; new library versions need a restart.
    The app, its engines, connections and threads are made in each worker (no preload_app)."""
    for name in LIBRARIES:
        importlib.import_module(name)


def post_worker_init(worker):
    """Before this worker serves: load the revoked tokens and start their reload timer (SPEC 4), and
    start the poller at once (an idle worker applies reconnects and may become the probing worker).

    Then take everything made so far (the imported code, the app, its engines) out of the
    garbage collector's full sweeps, which otherwise walk those objects again and again
    under load: about 30 us a request on /livez, measured as the workers' CPU time."""
    app = worker.wsgi
    if "dbhealth" in getattr(app, "extensions", {}):
        from backend.fleet import start_background

        start_background(app)
    gc.freeze()


def post_fork(server, worker):
    """Size the pool to the worker's threads unless DB_POOL_SIZE says otherwise (before the app is built)."""
    os.environ.setdefault("DB_POOL_SIZE", str(server.cfg.threads))
    os.environ.setdefault("DB_MAX_OVERFLOW", "0")


def child_exit(server, worker):
    """Drop the live gauges of a worker that exited; its counters stay until this server exits."""
    from prometheus_client import multiprocess

    _metrics_pids.add(worker.pid)
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove this run's metrics: the whole folder if it made it, else only its own files."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if _own_metrics_dir:
        shutil.rmtree(folder, ignore_errors=True)
        return
    pids = _metrics_pids | set(server.WORKERS)
    for name in os.listdir(folder):
        match = _METRICS_FILE.fullmatch(name)
        if match and int(match.group(1)) in pids:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
