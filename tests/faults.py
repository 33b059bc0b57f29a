"""Real faults for tests: a TCP proxy that can blackhole or reset, a private PostgreSQL
cluster the tests may stop and restart, and a gunicorn server run as a subprocess;
and ``wait_for``, the one way a test waits for something to become true.

Nothing here touches the shared servers' processes: the cluster and the
server are started by the test, and stopped by the pid the test started.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition, what="the condition", timeout: float = 20.0, interval: float = 0.1, ignoring=()):
    """``condition()`` until it returns something true, which is returned; fail after ``timeout`` seconds.

    :param what: what is waited for, named in the failure: text, or a function called then (to show the state).
    :param ignoring: exception classes that count as "not yet" (a page mid-refresh, a port not yet open).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except ignoring:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g}s for {what() if callable(what) else what}")
        time.sleep(interval)


def until_started(process: subprocess.Popen, ready, timeout: float, name: str, logs) -> None:
    """Wait for ``ready()`` (an OSError counts as not yet) while ``process`` runs; fail showing ``logs()``
    once it has exited or ``timeout`` seconds have passed."""

    def up():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited while starting:\n{logs()}")
        return ready()

    wait_for(up, lambda: f"{name} to start:\n{logs()}", timeout, interval=0.05, ignoring=(OSError,))


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Send ``sig`` to a process the test started, if it still runs; kill it if it has not exited within ``timeout``."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def accepts(port: int) -> bool:
    """True once something listens on 127.0.0.1:``port``; an OSError before."""
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Closing:
    """What a test starts and must close: ``with`` closes it, whatever happens inside."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Proxy(Closing):
    """A TCP proxy with modes: ``pass``, ``blackhole`` (accept, never answer, stop
    forwarding on open connections) and ``reset`` (refuse and reset connections);
    ``delay`` adds latency to every chunk forwarded."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.delay = 0.0
        self.cut_marker: bytes | None = None  # see cut_reply_after
        self.cut_pair: tuple[socket.socket, socket.socket] | None = None
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_reply_after(self, marker: bytes) -> None:
        """Once: forward the next client message holding ``marker`` (b"COMMIT"), then reset that
        connection when the server answers, so the client never learns the outcome (a lost
        acknowledgement)."""
        self.cut_marker = marker

    def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "blackhole", "reset")
        self.mode = mode
        if mode == "reset":
            with self.lock:
                for sock in self.connections:
                    _reset(sock)
                self.connections.clear()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.mode == "reset":
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self.lock:
                if self.closed:  # closed while this connection was being set up
                    client.close()
                    upstream.close()
                    return
                self.connections += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, to_server: bool = False) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if to_server and self.cut_marker and self.cut_marker in data:
                    self.cut_marker, self.cut_pair = None, (source, sink)
                elif not to_server and self.cut_pair == (sink, source):
                    self.cut_pair = None
                    for sock in (sink, source):  # shutdown first: it wakes the other pump's recv
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        _reset(sock)
                    return
                if self.delay:
                    time.sleep(self.delay)
                while self.mode == "blackhole" and not self.closed:
                    time.sleep(0.05)  # hold it: the peer sees silence, not an error
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        with self.lock:
            self.closed = True
        self.server.close()
        with self.lock:
            for sock in self.connections:
                try:
                    sock.close()
                except OSError:
                    pass


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already shut down: closing it is all that is left
    sock.close()


def run_sql(connection, *statements: str) -> list[dict]:
    """Run statements as given on a DB-API connection in autocommit, then close it; the rows of the last, as dicts."""
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
            if cursor.description is None:
                return []
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        connection.close()


def postgres_execute(url: str, *statements: str) -> list[dict]:
    """``run_sql`` with psycopg2, whose simple query protocol pgbouncer's admin console requires."""
    import psycopg2

    connection = psycopg2.connect(url, connect_timeout=3)
    connection.autocommit = True
    return run_sql(connection, *statements)


def postgres_bin(name: str) -> str:
    """A PostgreSQL server binary, or skip naming it (under CI=true a failure: nothing may skip there)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        reason = f"{name} not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    return found[-1]


class PrivateCluster(Closing):
    """A PostgreSQL cluster of the test's own, in a temporary folder on a free port."""

    def __init__(self, primary: PrivateCluster | None = None, settings: str = "") -> None:
        """A new cluster; given ``primary``, a streaming replica of it (pg_basebackup -R)."""
        self.folder = tempfile.mkdtemp(prefix="dbhealth-pg-")
        self.data = os.path.join(self.folder, "data")
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            os.chown(self.folder, pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid)
        if primary is None:
            self._run(postgres_bin("initdb"), "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        else:
            self._run(postgres_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                      "-D", self.data, "-R", "-X", "stream", "-c", "fast")
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as conf:
            conf.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.folder}'\n")
            conf.write("fsync = off\nshared_buffers = 16MB\nmax_connections = 50\n" + settings)
        self.start()

    def _run(self, *command: str) -> None:
        if self.user:
            command = ("runuser", "-u", self.user, "--", *command)
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{command} failed: {result.stdout}{result.stderr}")

    def pg_ctl(self, *args: str) -> None:
        self._run(postgres_bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.folder, "log"), "-w", *args)

    def start(self) -> None:
        self.pg_ctl("start")

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self.pg_ctl("restart", "-m", "fast")

    def url(self, port: int | None = None, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{database}"

    def execute(self, *statements: str, database: str = "postgres") -> list[dict]:
        """Run statements as postgres (set-up: databases, roles); the rows of the last."""
        return postgres_execute(self.url(database=database), *statements)

    def close(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivateMariaDB(Closing):
    """A MariaDB server of the test's own (mariadb-install-db, mariadbd) in a temporary folder on a free port.

    For what must not happen on the shared server: making it a replica, for one,
    or a server with TLS (``options`` such as ``--ssl-cert=...``; files the
    ``mysql`` user can read).
    """

    def __init__(self, options: tuple[str, ...] = ()) -> None:
        for name in ("mariadb-install-db", "mariadbd"):
            if shutil.which(name) is None and not os.path.exists(f"/usr/sbin/{name}"):
                pytest.skip(f"{name} not found (Debian package mariadb-server)")
        self.folder = tempfile.mkdtemp(prefix="dbhealth-mariadb-")
        self.data = os.path.join(self.folder, "data")
        self.port = free_port()
        user = ["--user=mysql"] if os.geteuid() == 0 else []
        if user:
            mysql = pwd.getpwnam("mysql")
            os.chown(self.folder, mysql.pw_uid, mysql.pw_gid)
        install = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--auth-root-authentication-method=normal",
             "--skip-test-db", *user],
            capture_output=True, text=True, timeout=120,
        )
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {install.stdout}{install.stderr}")
        self.log_path = os.path.join(self.folder, "error.log")
        self.process = subprocess.Popen(
            [shutil.which("mariadbd") or "/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.data}", *user,
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.folder}/mysqld.sock",
             f"--pid-file={self.folder}/mysqld.pid", f"--log-error={self.log_path}", "--skip-log-bin",
             "--innodb-buffer-pool-size=16M", "--relay-log=relay-bin", *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        until_started(self.process, self._greets, 60, "mariadbd", lambda: Path(self.log_path).read_text())

    def _greets(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            return bool(sock.recv(1))  # the server's greeting: it is accepting logins

    def url(self, database: str = "mysql") -> str:
        return f"mariadb://root@127.0.0.1:{self.port}/{database}"

    def execute(self, *statements: str) -> list[dict]:
        """Run statements as root (set-up: users, databases); the rows of the last."""
        import pymysql

        return run_sql(pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True, ssl_disabled=True),
                       *statements)

    def close(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


class Gunicorn:
    """`gunicorn wsgi:app` with our gunicorn.conf.py, as an operator would run it."""

    def __init__(self, env: dict[str, str], workers: int = 2, extra: tuple[str, ...] = (), ready_path: str = "/livez"):
        self.port = free_port()
        self.started = time.time()
        descriptor, self.log_path = tempfile.mkstemp(prefix="dbhealth-gunicorn-", suffix=".log")
        os.close(descriptor)
        self.out_path = self.log_path + ".out"
        self.final_logs: str | None = None  # kept by stop(), which removes the files
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}",
                   "--workers", str(workers), *extra]
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_LEVEL": "INFO", **env}
        with open(self.out_path, "w") as stdout, open(self.log_path, "w") as stderr:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=full_env, stdout=stdout, stderr=stderr, start_new_session=True
            )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        try:
            until_started(self.process, lambda: self.get(ready_path)[0] == 200, 30, "gunicorn", self.logs)
            if env.get("INSTANCE_PATH"):
                # Until each worker is past post_worker_init (its poller has written its file), so that a
                # fault a test makes next does not meet a worker still loading at boot.
                folder = os.path.join(env["INSTANCE_PATH"], "workers")
                until_started(self.process, lambda: self._every_worker_wrote(folder, workers), deadline - time.monotonic(),
                              "every gunicorn worker", self.logs)
        except BaseException:
            self.stop(quick=True)  # the error names what the logs said; nothing is left running or on disk
            raise

    def _every_worker_wrote(self, folder: str, workers: int) -> bool:
        pids = set(self.worker_pids())
        written = {int(name[:-5]) for name in os.listdir(folder) if name[:-5].isdigit()}
        return len(pids) >= workers and pids <= written

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET", timeout: float = 30,
            body: bytes | None = None):
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def logs(self) -> str:
        if self.final_logs is not None:
            return self.final_logs
        return Path(self.log_path).read_text() + Path(self.out_path).read_text()

    def stop(self, quick: bool = False) -> None:
        """Graceful stop; ``quick`` (SIGQUIT) does not wait for stuck workers. The logs stay readable."""
        stop_process(self.process, signal.SIGQUIT if quick else signal.SIGTERM, timeout=20)
        if self.final_logs is None:
            self.final_logs = self.logs()
            for path in (self.log_path, self.out_path):
                Path(path).unlink(missing_ok=True)


def pgbouncer_bin() -> str:
    """pgbouncer from Debian's package (.ci/run installs it); skipped outside CI when missing."""
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if found is None:
        reason = "pgbouncer is not installed (apt-get install -y pgbouncer)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    return found


class PgBouncer(Closing):
    """A pgbouncer of the test's own on a free port, as the postgres user, never a system service.

    Every database name is forwarded to ``target_port``; ``postgres`` is an
    admin of its console. Stopped by the pid the test started.
    """

    def __init__(self, target_port: int, pool_mode: str = "transaction", pool_size: int = 2, settings: str = "") -> None:
        """``settings``: more lines for the [pgbouncer] section (client TLS, for one)."""
        binary = pgbouncer_bin()
        self.folder = tempfile.mkdtemp(prefix="dbhealth-pgbouncer-")
        self.port = free_port()
        self.pool_mode = pool_mode
        ini = os.path.join(self.folder, "pgbouncer.ini")
        with open(os.path.join(self.folder, "userlist.txt"), "w") as users:
            users.write('"postgres" ""\n')
        with open(ini, "w") as conf:
            conf.write(
                f"[databases]\n* = host=127.0.0.1 port={target_port}\n\n[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
                f"auth_type = trust\nauth_file = {self.folder}/userlist.txt\nadmin_users = postgres\n"
                f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
                f"logfile = {self.folder}/pgbouncer.log\nignore_startup_parameters = extra_float_digits\n"
                + settings
            )
        user = "postgres" if os.geteuid() == 0 else None  # pgbouncer refuses to run as root
        if user:
            entry = pwd.getpwnam(user)
            for path in (self.folder, ini, os.path.join(self.folder, "userlist.txt")):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.process = subprocess.Popen(
            [binary, ini], user=user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        until_started(self.process, lambda: accepts(self.port), 15, "pgbouncer", self.log)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin_url(self) -> str:
        return self.url("pgbouncer")

    def admin(self, statement: str) -> list[dict]:
        """Rows of one admin console command."""
        return postgres_execute(self.admin_url(), statement)

    def point_at(self, target_port: int) -> None:
        """Forward every database to ``target_port`` from now on (RELOAD); its clients stay connected."""
        ini = Path(self.folder, "pgbouncer.ini")
        ini.write_text(re.sub(r"(\* = host=127\.0\.0\.1 port=)\d+", rf"\g<1>{target_port}", ini.read_text()))
        self.admin("RELOAD")
        self.admin("RECONNECT")

    def log(self) -> str:
        try:
            return Path(self.folder, "pgbouncer.log").read_text()
        except OSError:
            return ""

    def close(self) -> None:
        stop_process(self.process, timeout=10)  # SIGTERM: pgbouncer's immediate shutdown
        shutil.rmtree(self.folder, ignore_errors=True)
