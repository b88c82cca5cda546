"""A team's MLflow tracking server: runs, params, metrics and the model registry in PostgreSQL,
artifacts proxied by the server into one folder (`--artifacts-destination`), so clients need only
its URL in MLFLOW_TRACKING_URI — no database driver, no shared disk.

    python scripts/team_server.py start --dir ~/wbc-server --port 5000   # prints the URI to use
    python scripts/team_server.py stop --dir ~/wbc-server

Both servers are started here and stopped by the PIDs this script records in the folder. The
database listens on 127.0.0.1 only (trust authentication: only this machine's users reach it);
the MLflow server on `--host` (127.0.0.1 by default; put a team-facing one behind your proxy).
PostgreSQL refuses to run as root: as root the database runs as the `postgres` user, so the
folder must be one that user can enter.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

USER, DATABASE = "wbc", "mlflow"


@dataclass(frozen=True)
class Server:
    uri: str  # what MLFLOW_TRACKING_URI is set to
    folder: Path
    database: str  # the backend store URI
    mlflow_pid: int
    postgres_pid: int


def pg_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin."""
    debian = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))  # the newest version last
    found = shutil.which(name) or (str(debian[-1]) if debian else None)
    if found is None:
        raise SystemExit(
            f"error: PostgreSQL's {name} not found: install its server (apt-get install postgresql)"
        )
    return found


def as_db_user(cmd: list[str]) -> list[str]:
    """`cmd` as the `postgres` user when run as root (PostgreSQL refuses root); setpriv execs in place,
    so the PID Popen returns is the server's own."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--reset-env", *cmd]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, proc: subprocess.Popen, log: Path, timeout_s: float, sig: int) -> None:
    """Until `check()` holds; a server that exits, fails the check or times out is stopped by PID."""
    deadline = time.monotonic() + timeout_s
    try:
        while not check():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
                raise SystemExit(f"error: {what} did not start (see {log}):\n{tail}")
            time.sleep(0.3)
    except BaseException:
        stop_pid(proc.pid, sig)
        raise


def start_postgres(folder: Path, port: int) -> int:
    data = folder / "postgres"
    if os.geteuid() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        data.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(data, "postgres", "postgres")
        reach = subprocess.run(as_db_user(["test", "-w", str(data)]), capture_output=True)
        if reach.returncode != 0:
            raise SystemExit(
                f"error: {data}: the postgres user cannot reach this folder (a parent is private to root): "
                "choose a --dir it can enter"
            )
    if not (data / "PG_VERSION").is_file():
        subprocess.run(
            as_db_user([pg_bin("initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"]),
            check=True, capture_output=True,
        )  # fmt: skip
    log = folder / "postgres.log"
    cmd = [pg_bin("postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
           "-c", "unix_socket_directories=", "-c", "max_connections=200"]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(as_db_user(cmd), stdout=out, stderr=out, start_new_session=True)
    _wait(lambda: _database_ready(port), "PostgreSQL", proc, log, 60, signal.SIGINT)
    return proc.pid


def _database_ready(port: int) -> bool:
    import psycopg2

    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres", connect_timeout=2)
    except psycopg2.OperationalError:
        return False
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        conn.close()
    return True


def start_mlflow(folder: Path, database: str, host: str, port: int, workers: int) -> int:
    import requests

    artifacts = folder / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = folder / "mlflow.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database,
           "--artifacts-destination", artifacts.resolve().as_uri(), "--host", host, "--port", str(port),
           "--workers", str(workers)]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env, start_new_session=True)

    def healthy() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    _wait(healthy, "the MLflow server", proc, log, 180, signal.SIGTERM)
    return proc.pid


def start(folder: Path, port: int = 0, pg_port: int = 0, host: str = "127.0.0.1", workers: int = 4) -> Server:
    """Start PostgreSQL and an MLflow server on it; record both PIDs in the folder."""
    folder = folder.resolve()
    if (folder / "pids").is_file():
        raise SystemExit(f"error: {folder / 'pids'} exists: stop the running server first (stop --dir)")
    port, pg_port = port or free_port(), pg_port or free_port()
    pg_pid = start_postgres(folder, pg_port)
    database = f"postgresql+psycopg2://{USER}@127.0.0.1:{pg_port}/{DATABASE}"
    try:
        ml_pid = start_mlflow(folder, database, host, port, workers)
    except BaseException:
        stop_pid(pg_pid, signal.SIGINT)
        raise
    uri = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    (folder / "pids").write_text(f"mlflow {ml_pid}\npostgres {pg_pid}\nuri {uri}\ndatabase {database}\n")
    return Server(uri, folder, database, ml_pid, pg_pid)


def recorded(folder: Path) -> dict[str, str]:
    path = folder.resolve() / "pids"
    if not path.is_file():
        raise SystemExit(f"error: {path}: no server recorded there")
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout_s: float = 60) -> None:
    """Signal one process (PostgreSQL: SIGINT is its fast shutdown) and wait until it is gone."""
    try:
        os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child: poll whether it still exists
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def stop(folder: Path) -> None:
    """Stop the MLflow server, then PostgreSQL, by the PIDs recorded at start."""
    pids = recorded(folder)
    stop_pid(int(pids["mlflow"]))
    stop_pid(int(pids["postgres"]), signal.SIGINT)
    (folder.resolve() / "pids").unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("start", help="start PostgreSQL and the MLflow server; print the tracking URI")
    up.add_argument("--dir", type=Path, required=True, help="database, artifacts, logs and PIDs")
    up.add_argument("--port", type=int, default=5000, help="the MLflow server's port (0: any free one)")
    up.add_argument("--pg-port", type=int, default=0, help="PostgreSQL's port on 127.0.0.1 (0: any free one)")
    up.add_argument("--host", default="127.0.0.1", help="the MLflow server's address")
    up.add_argument("--workers", type=int, default=4)
    down = sub.add_parser("stop", help="stop both servers by their recorded PIDs")
    down.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "start":
        server = start(args.dir, args.port, args.pg_port, args.host, args.workers)
        print(f"export MLFLOW_TRACKING_URI={server.uri}   # PIDs in {server.folder / 'pids'}")
    else:
        stop(args.dir)
        print(f"stopped the servers recorded in {args.dir.resolve() / 'pids'}")


if __name__ == "__main__":
    main()
