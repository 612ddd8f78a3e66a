"""``make run`` as a new user runs it: embedded engines, healthy gateway, clean stop, data kept across restarts."""

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from shared.devstack.processes import ALL_PORT_VARIABLES
from shared.engines import free_port, port_open
from shared.testing.fixtures import engine_directory

ROOT = Path(__file__).resolve().parents[2]


def make_run_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    env.update({name: str(free_port()) for name in ALL_PORT_VARIABLES})
    env["VAR_DIR"] = str(var_dir)
    env["APP_ENV"] = "dev"
    return env


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], float]:
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=ROOT,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = time.monotonic()
    url = f"http://127.0.0.1:{env['GATEWAY_PORT']}/api/plugins/health"
    while time.monotonic() - started < 120:
        assert proc.poll() is None, log.read_text()[-4000:]
        try:
            if httpx.get(url, timeout=2).json()["status"] == "healthy":
                return proc, time.monotonic() - started
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError("make run never became healthy:\n" + log.read_text()[-4000:])


def descendants(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def assert_all_gone(children: list[psutil.Process], env: dict[str, str]) -> None:
    _, alive = psutil.wait_procs(children, timeout=30)
    assert [p.pid for p in alive] == [], [p.cmdline() for p in alive]
    busy = [name for name in ALL_PORT_VARIABLES if port_open(int(env[name]))]
    assert busy == []


async def sql(env: dict[str, str], statement: str) -> object:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{env['POSTGRES_PORT']}/platform")
    try:
        if statement.startswith("SELECT"):
            return await conn.fetchval(statement)
        return await conn.execute(statement)
    finally:
        await conn.close()


@pytest.mark.timeout(400)
def test_make_run_starts_healthy_stops_clean_and_keeps_data(tmp_path: Path) -> None:
    with engine_directory("make-run-") as var_dir:
        make_run_twice(var_dir, tmp_path / "make-run.log")


def make_run_twice(var_dir: Path, log: Path) -> None:
    env = make_run_env(var_dir)

    proc, seconds = start(env, log)
    try:
        first_run(proc, env, log, seconds)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    # Second start on the same data directory, new ports: Postgres data survived; SIGTERM to `make` alone.
    env.update({name: str(free_port()) for name in ALL_PORT_VARIABLES if name != "POSTGRES_PORT"})
    proc, _ = start(env, log)
    try:
        children = descendants(proc)
        assert asyncio.run(sql(env, "SELECT v FROM public.kept")) == "still here"
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        assert_all_gone(children, env)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def first_run(proc: subprocess.Popen[bytes], env: dict[str, str], log: Path, seconds: float) -> None:
    children = descendants(proc)
    names = " ".join(" ".join(p.cmdline()) for p in children)
    for module in (
        "services.gateway",
        "services.auth",
        "services.renders.worker",
        "services.webhooks.dispatcher",
        "services.telemetry",
        "services.credits",
        "tansu",
        "redis-server",
        "postgres",
    ):
        assert module in names, f"{module} not running"
    print(f"make run healthy after {seconds:.1f}s")  # noqa: T201 - reported in the run's output
    asyncio.run(sql(env, "CREATE TABLE public.kept (v text); INSERT INTO public.kept VALUES ('still here')"))

    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    assert proc.wait(60) is not None
    assert_all_gone(children, env)
    assert "[make run] stopped" in log.read_text()
