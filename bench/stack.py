"""Start the whole platform for a benchmark, on free ports, and stop it leaving nothing behind.

``running_platform`` runs ``python -m shared.devstack run`` (what ``make run`` runs: embedded PostgreSQL, Kafka and
Redis, migrations, every service) in a temporary ``VAR_DIR`` with a free port for every ``*_PORT`` variable, waits
for ``/api/plugins/health`` to say healthy, and on exit sends SIGINT to the supervisor, waits for it, and checks with
psutil that none of its descendants survived (any survivor is killed and reported in ``Platform.teardown``).

The environment of the platform is built from scratch for the variables that shape it: service settings
(``GATEWAY_*``, ``AUTH_*`` ...) and engine URLs inherited from the caller's shell are dropped, so every run measures
the product's defaults plus the overrides the benchmark passes explicitly (and reports).

Also here: ``child_process`` for a helper process of the benchmark (the trivial upstream), the few API calls the
benchmarks need to set themselves up (sign up, create an API key), the operator CLI against the platform (grant
credits), the platform's processes grouped by what they are (``Platform.process_groups``, for CPU accounting) and
``paused`` (SIGSTOP a process tree for a while, e.g. the render worker, always resumed on exit).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.loadgen import proc_cpu_seconds
from shared.apikeys import SCOPES
from shared.db import plain_dsn
from shared.devstack.processes import ALL_PORT_VARIABLES
from shared.devstack.supervisor import DATABASE_NAME
from shared.engines import die_with_parent, free_port, stop_process, wait_for_port
from shared.keys import GATEWAY_IDENTITY, dev_private_key

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"

# Inherited variables that would change what is measured (service settings, external engines, data dirs).
DROPPED_PREFIXES = ("GATEWAY_", "AUTH_", "CREDITS_", "RENDERS_", "WEBHOOKS_", "TELEMETRY_", "S3_")
DROPPED_NAMES = frozenset(
    {
        "APP_ENV",
        "DATABASE_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "REDIS_URL",
        "VAR_DIR",
        "STORAGE_DIR",
        "STORAGE_BACKEND",
        "PUBLIC_BASE_URL",
        "SIGNUP_CREDITS",
        "ADMIN_EMAILS",
        "INTERNAL_IDENTITY_PUBLIC_KEY",
        "INTERNAL_IDENTITY_TTL_SECONDS",
        "SERVICE_IDENTITY_KEY",
        "SERVICE_IDENTITY_PUBLIC_KEYS",
        "LOG_LEVEL",
        "DB_POOL_SIZE",
    }
)
# ``shared.devstack.processes.platform_processes``: module -> process name (not called here: it builds every
# service's settings, which refuse the placeholder secret outside APP_ENV=dev). An unknown module keeps its name.
SERVICE_MODULES = {
    "services.auth": "auth",
    "services.renders": "renders-api",
    "services.renders.worker": "render-worker",
    "services.credits": "credits",
    "services.webhooks": "webhooks-api",
    "services.webhooks.dispatcher": "webhooks-dispatcher",
    "services.telemetry": "telemetry",
    "services.gateway": "gateway",
}
# The cmdline marker of each process whose CPU time a benchmark may want (see ``Platform.pids``).
PROCESS_MARKERS = {
    "gateway": "services.gateway",
    "auth": "services.auth",
    "credits": "services.credits",
    "redis": "redis-server",
}


def gateway_identity_key() -> Ed25519PrivateKey:
    """The key the platform's gateway signs identities with (the dev key: the platform runs with APP_ENV=dev and
    no key set), for benchmarks that sign what the gateway would."""
    return dev_private_key(GATEWAY_IDENTITY)


def say(message: str) -> None:
    print(f"[platform] {message}", flush=True)


@dataclass
class Platform:
    """A running platform: its ports, data directory and supervisor process."""

    ports: dict[str, int]
    var_dir: Path
    proc: subprocess.Popen[bytes]
    overrides: dict[str, str]
    start_seconds: float = 0.0
    teardown: dict[str, Any] = field(default_factory=dict)

    @property
    def gateway_port(self) -> int:
        return self.ports["GATEWAY_PORT"]

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['GATEWAY_PORT']}"

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['AUTH_PORT']}"

    @property
    def credits_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['CREDITS_PORT']}"

    @property
    def database_url(self) -> str:
        """The platform's database as the services are given it (``DATABASE_URL``, SQLAlchemy + asyncpg)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.ports['POSTGRES_PORT']}/{DATABASE_NAME}"

    @property
    def database_dsn(self) -> str:
        """A libpq DSN of the platform's database on the embedded server (asyncpg)."""
        return f"postgresql://postgres@127.0.0.1:{self.ports['POSTGRES_PORT']}/{DATABASE_NAME}"

    def pids(self) -> dict[str, int]:
        """PIDs of the interesting platform processes (gateway, auth, credits, redis) by name."""
        found: dict[str, int] = {}
        for process in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmdline = " ".join(process.cmdline())
            except psutil.Error:
                continue
            for name, marker in PROCESS_MARKERS.items():
                # "services.auth" must not match "services.authx": module names end the command line.
                if name not in found and (cmdline.endswith(marker) or f"{marker} " in cmdline):
                    found[name] = process.pid
        return found

    def process_groups(self) -> dict[str, list[psutil.Process]]:
        """Every process of the platform under the name of the supervisor's child it belongs to: the service names
        of ``shared.devstack.processes`` (``render-worker`` includes its render pool), ``postgres`` (with its
        backends), ``kafka``, ``redis``; and ``supervisor`` itself."""
        names = SERVICE_MODULES
        groups: dict[str, list[psutil.Process]] = {}
        try:
            supervisor = psutil.Process(self.proc.pid)
            children = supervisor.children()
        except psutil.NoSuchProcess:
            return groups
        groups["supervisor"] = [supervisor]
        for child in children:
            try:
                cmdline = child.cmdline()
                members = [child, *child.children(recursive=True)]
            except psutil.Error:
                continue
            groups.setdefault(_group_name(cmdline, names), []).extend(members)
        return groups

    def service_tree(self, name: str) -> list[psutil.Process]:
        """A service process (by its devstack name, e.g. ``render-worker``) and all its descendants."""
        tree = self.process_groups().get(name)
        if not tree:
            raise RuntimeError(f"no {name} process under the supervisor")
        return tree

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def background_cpu(self, named: dict[str, int], seconds: float = 3.0) -> dict[str, Any]:
        """CPU the idle platform burns (pollers, consumers, engines), in total and for each ``named`` process in
        CPU seconds per second: context on a 2-core box, and the baseline CPU per request is taken net of."""
        processes = self.descendants()

        def sample() -> tuple[float, dict[str, float]]:
            spent = 0.0
            for p in processes:
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    spent += times.user + times.system
            return spent, {name: proc_cpu_seconds(pid) for name, pid in named.items()}

        t0 = time.perf_counter()
        total_before, named_before = sample()
        time.sleep(seconds)
        total_after, named_after = sample()
        elapsed = time.perf_counter() - t0
        return {
            "processes": len(processes),
            "seconds": round(elapsed, 2),
            "tree_cpu_fraction_of_one_core": round((total_after - total_before) / elapsed, 3),
            "per_process": {name: round((named_after[name] - named_before[name]) / elapsed, 4) for name in named},
        }


def _group_name(cmdline: list[str], module_names: dict[str, str]) -> str:
    if "-m" in cmdline:
        index = cmdline.index("-m")
        if index + 1 < len(cmdline):
            return module_names.get(cmdline[index + 1], cmdline[index + 1])
    program = Path(cmdline[0]).name if cmdline else "?"
    if program.startswith("postgres"):
        return "postgres"
    if program.startswith("redis"):
        return "redis"
    if "broker" in cmdline:
        return "kafka"
    return program


def group_cpu_seconds(groups: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """User + system CPU seconds so far of each group (processes gone since the groups were taken count 0)."""
    spent: dict[str, float] = {}
    for (name, _), value in process_cpu_seconds(groups).items():
        spent[name] = spent.get(name, 0.0) + value
    return spent


def process_cpu_seconds(groups: dict[str, list[psutil.Process]]) -> dict[tuple[str, int], float]:
    """User + system CPU seconds so far of every live process of every group, by (group, pid)."""
    spent: dict[tuple[str, int], float] = {}
    for name, processes in groups.items():
        for process in processes:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                spent[(name, process.pid)] = times.user + times.system
    return spent


def cpu_delta(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]) -> dict[str, float]:
    """CPU seconds each group spent between two ``process_cpu_seconds`` snapshots, over the processes alive at
    both (a process that exited in between, e.g. a closed postgres backend, is left out rather than counted
    negative)."""
    spent: dict[str, float] = {}
    for key, value in after.items():
        if key in before:
            spent[key[0]] = spent.get(key[0], 0.0) + max(0.0, value - before[key])
    return spent


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, ours or not; /proc/stat less idle and iowait)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@contextlib.contextmanager
def paused(processes: list[psutil.Process]) -> Iterator[list[int]]:
    """SIGSTOP every process (parents first), and SIGCONT them all on exit whatever happens (a stopped process
    would not even act on the supervisor's SIGTERM at teardown). Yields the pids stopped."""
    stopped: list[psutil.Process] = []
    try:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGSTOP)
                stopped.append(process)
        yield [p.pid for p in stopped]
    finally:
        for process in reversed(stopped):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)


def platform_env(overrides: dict[str, str], ports: dict[str, int], var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_NAMES and not k.startswith(DROPPED_PREFIXES)}
    env.update({name: str(port) for name, port in ports.items()})
    env.update(
        {
            "APP_ENV": "dev",
            "VAR_DIR": str(var_dir),
            "LOG_LEVEL": "INFO",
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['GATEWAY_PORT']}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def distinct_free_ports(names: tuple[str, ...]) -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = free_port()
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:160]}"
    except psutil.Error:
        return str(process.pid)


def stop_platform(platform: Platform, timeout: float = 60.0) -> dict[str, Any]:
    """SIGINT to the supervisor (it stops its children and engines), then make sure nothing of it is left."""
    proc = platform.proc
    descendants = platform.descendants()  # taken last thing before the signal: the latest set of children
    started = time.monotonic()
    forced = False
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            forced = True
            proc.kill()
            proc.wait(10)
    stop_seconds = time.monotonic() - started
    survivors_at_exit = [p for p in descendants if _alive(p)]
    # Grace: a process that got SIGTERM from PDEATHSIG as the supervisor exited may still be on its way out.
    deadline = time.monotonic() + 5
    survivors = survivors_at_exit
    while survivors and time.monotonic() < deadline:
        time.sleep(0.1)
        survivors = [p for p in survivors if _alive(p)]
    killed = [_describe(p) for p in survivors]
    for p in survivors:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(survivors, timeout=5)
    report = {
        "signal": "SIGINT",
        "supervisor_exit_code": proc.returncode,
        "supervisor_killed_after_timeout": forced,
        "stop_seconds": round(stop_seconds, 2),
        "descendants_before_stop": len(descendants),
        "alive_when_supervisor_exited": [_describe(p) for p in survivors_at_exit],
        "killed_by_bench": killed,
        "clean": not forced and not survivors_at_exit,
    }
    if report["clean"]:
        say(f"stopped in {stop_seconds:.1f}s; all {len(descendants)} descendants gone")
    else:
        say(f"NOT clean: {report}")
    return report


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@contextlib.contextmanager
def running_platform(overrides: dict[str, str], *, health_timeout: float = 150.0) -> Iterator[Platform]:
    """The whole platform on free ports with ``overrides`` on top of its defaults; always stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="bench-platform-") as tmp:
        var_dir = Path(tmp) / "var"
        var_dir.mkdir()
        ports = distinct_free_ports(ALL_PORT_VARIABLES)
        env = platform_env(overrides, ports, var_dir)
        log_path = Path(tmp) / "supervisor.log"
        started = time.monotonic()
        say(f"starting (var {var_dir}, gateway port {ports['GATEWAY_PORT']})")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shared.devstack", "run", "--var-dir", str(var_dir)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the terminal reaches us only; we stop it in order
            )
        platform = Platform(ports, var_dir, proc, dict(overrides))
        try:
            _wait_healthy(platform, log_path, health_timeout)
            platform.start_seconds = round(time.monotonic() - started, 2)
            say(f"healthy after {platform.start_seconds:.1f}s")
            yield platform
        except BaseException:
            if proc.poll() is not None or not platform.start_seconds:
                supervisor_log = _tail(log_path)
                sys.stderr.write(f"supervisor log tail:\n{supervisor_log}\n")
                # "<process> exited during start-up; see <log>": show that log too.
                for path in sorted(set(re.findall(r"see (\S+\.log)", supervisor_log))):
                    sys.stderr.write(f"{path} tail:\n{_tail(Path(path))}\n")
            raise
        finally:
            platform.teardown = stop_platform(platform)


def _wait_healthy(platform: Platform, log_path: Path, timeout: float) -> None:
    url = platform.gateway_url + "/api/plugins/health"
    deadline = time.monotonic() + timeout
    last: Any = None
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if platform.proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {platform.proc.returncode} during start-up")
            try:
                last = client.get(url).json()
                if last.get("status") == "healthy":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.25)
    raise TimeoutError(f"platform not healthy after {timeout}s; last health answer: {last}")


@contextlib.contextmanager
def child_process(args: list[str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A helper process of the benchmark (``python <args>``) that dies with us, is waited for on ``port`` and is
    always stopped on exit."""
    env = {**os.environ, "APP_ENV": "dev"}
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        try:
            wait_for_port(port, 30, proc)
            yield proc
        except BaseException:
            if proc.poll() is not None:  # it died on its own: show why
                log.flush()
                sys.stderr.write(f"{' '.join(args)} exited with {proc.returncode}; log tail:\n{_tail(log_path)}\n")
            raise
        finally:
            stop_process(proc)


# --- set-up through the public API ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchUser:
    email: str
    password: str
    user_id: str
    access_token: str


async def sign_up(client: httpx.AsyncClient, email: str | None = None, password: str | None = None) -> BenchUser:
    """A new account through the gateway (``client`` has the gateway as base URL)."""
    email = email or f"bench-{uuid.uuid4().hex[:12]}@example.com"
    password = password or f"pw-{uuid.uuid4().hex}"
    response = await client.post("/api/plugins/auth/signup", json={"email": email, "password": password})
    if response.status_code != 201:
        raise RuntimeError(f"signup answered {response.status_code}: {response.text[:300]}")
    body = response.json()
    return BenchUser(email, password, body["user"]["id"], body["access_token"])


async def create_api_key(client: httpx.AsyncClient, user: BenchUser, name: str = "bench") -> str:
    """A new API key with every scope, created with the user's Bearer token; returns the raw key."""
    response = await client.post(
        "/api/plugins/keys",
        json={"name": name, "scopes": list(SCOPES)},
        headers={"Authorization": f"Bearer {user.access_token}"},
    )
    if response.status_code != 201:
        raise RuntimeError(f"key creation answered {response.status_code}: {response.text[:300]}")
    key: str = response.json()["data"]["key"]
    return key


def operator_cli(platform: Platform, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m services.auth.cli ARGS`` against the platform, the way an operator runs it (see
    ``shared.testing.fixtures.run_cli``): auth's database, credits' internal API, the platform's signing keys."""
    env = platform_env(platform.overrides, platform.ports, platform.var_dir)
    env["DATABASE_URL"] = platform.database_url
    env["AUTH_CREDITS_URL"] = platform.credits_url
    env["AUTH_SIGNING_KEYS_DIR"] = str(platform.var_dir / "keys")
    return subprocess.run(
        [sys.executable, "-m", "services.auth.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def grant_credits(platform: Platform, email: str, credits: int, reference: str | None = None) -> int:
    """Add credits with the operator CLI (one ledger grant of at most credits' per-grant maximum); returns the new
    balance."""
    reference = reference or f"bench:{uuid.uuid4()}"
    done = operator_cli(platform, "grant-credits", email, str(credits), "--reference", reference, "--reason", "bench")
    match = re.search(r"balance is now (\d+)", done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"grant-credits failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-1500:]}")
    return int(match.group(1))


def environment_report(platform: Platform) -> dict[str, Any]:
    """What to write next to the figures about how the platform ran."""
    return {
        "started_with": "python -m shared.devstack run (embedded PostgreSQL/Kafka/Redis, every process)",
        "app_env": "dev",
        "overrides": platform.overrides,
        "note": "every other setting at its default (inherited GATEWAY_*/AUTH_*/... variables dropped)",
        "start_seconds": platform.start_seconds,
        "teardown": platform.teardown,
    }


async def create_database(server_url: str, name: str) -> str:
    """A new database on ``server_url``'s server (a bench's own, so it never touches another's data); its URL."""
    conn = await asyncpg.connect(plain_dsn(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
