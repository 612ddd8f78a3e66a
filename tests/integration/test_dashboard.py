"""The operator dashboard (``/admin/``) in a real headless Chromium, driven by Playwright, against the whole stack.

Known data goes in first through the gateway (two Archicad plugin users render, one has a webhook), the test waits
until the telemetry API shows all of it, then signs in through the page's form and reads the numbers back from the
page: the per-platform table, the renders chart's bars (each carries ``data-value``), the KPI tiles. The page must
not reach any other origin and must run under a strict Content-Security-Policy. A plugin user who signs in sees
the API's 403 and no data. A full-page screenshot is kept under the test artefacts. The API docs page
(Swagger UI over the OpenAPI document) is checked in the same browser.

Chromium: ``CHROMIUM_PATH``, else the first of chromium / chromium-browser / google-chrome / chrome on ``PATH``
(Debian's ``chromium`` package; ``.ci/run`` installs it). Without one the tests skip, except in CI where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Response,
    Route,
    async_playwright,
    expect,
)

from shared.testing.fixtures import PluginUser, Stack, sign_up
from shared.testing.kafka import wait_until
from shared.testing.receiver import Receiver
from shared.testing.renders import submission, wait_final
from shared.testing.servers import serve_in_thread

PLATFORM = "archicad"
VERSION = "27.0.1"
RENDERS_PER_USER = 2  # a new account's signup credits pay for two standard renders
USERS = 2
RENDERS = RENDERS_PER_USER * USERS
SUMMARY = "/api/admin/telemetry/summary"
pytestmark = pytest.mark.usefixtures("chromium_path")  # resolved first: skips before the stack starts

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]  # root in a container: no user namespaces, small /dev/shm
STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium to drive; resolved before the stack starts, so a machine without one skips at once."""
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        if not (Path(configured).is_file() and os.access(configured, os.X_OK)):
            pytest.fail(f"CHROMIUM_PATH={configured!r} is not an executable file")
        return configured
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail(
            "no Chromium found in CI: .ci/run should have installed Debian's chromium "
            f"(looked for CHROMIUM_PATH and {', '.join(CHROMIUM_NAMES)} on PATH)"
        )
    pytest.skip("no Chromium found: set CHROMIUM_PATH or install Debian's chromium")


@pytest.fixture(scope="module")
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="module")
def hook_receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with serve_in_thread(hooks.app) as url:
        yield hooks, url


class Recorder:
    """What one page did: every request URL, console errors, failed requests, API answers."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.console_errors: list[str] = []
        self.failed: list[str] = []
        page.on("request", self._request)
        page.on("requestfailed", lambda request: self.failed.append(f"{request.url}: {request.failure}"))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console_errors.append(f"pageerror: {error}"))

    def _request(self, request: Request) -> None:
        self.urls.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def foreign(self, origin: str) -> list[str]:
        return [url for url in self.urls if _origin(url) != origin]

    def csp_violations(self) -> list[str]:
        return [text for text in self.console_errors if "Content Security Policy" in text]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def open_dashboard(browser: Browser, stack: Stack) -> tuple[Page, Recorder]:
    """A fresh context (its own sessionStorage) on ``/admin/``, served with a strict CSP added by the test."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-GB", timezone_id="UTC")
    page = await context.new_page()
    recorder = Recorder(page)

    async def with_csp(route: Route) -> None:
        response = await route.fetch()
        await route.fulfill(response=response, headers={**response.headers, "content-security-policy": STRICT_CSP})

    await page.route(f"{stack.gateway_url}/admin/", with_csp)
    response = await page.goto(f"{stack.gateway_url}/admin/")
    assert response is not None
    assert response.status == 200
    await expect(page.get_by_test_id("login-form")).to_be_visible()
    return page, recorder


async def sign_in(page: Page, email: str, password: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def bar_values(page: Page, chart: str, series: str) -> list[int]:
    values: list[str] = await page.locator(f'[data-testid="{chart}"] rect.bar[data-series="{series}"]').evaluate_all(
        "bars => bars.map(bar => bar.dataset.value)"
    )
    return [int(v) for v in values]


async def cell_value(page: Page, row: str, col: str) -> str | None:
    return await page.locator(f'[data-testid="table-platforms"] {row} td[data-col="{col}"]').get_attribute("data-value")


def _platform(summary: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in summary["platforms"] if p["platform"] == name), None)


def _version(platform: dict[str, Any] | None, version: str) -> dict[str, Any] | None:
    if platform is None:
        return None
    return next((v for v in platform["versions"] if v["pluginVersion"] == version), None)


async def create_archicad_traffic(
    gateway_client: httpx.AsyncClient, stack: Stack, hooks: Receiver, hook_url: str
) -> tuple[int, int]:
    """Two Archicad users render twice each; returns (their requests through the gateway, credits they spent)."""
    users = [await sign_up(gateway_client) for _ in range(USERS)]
    requests = 0

    async def count(_: httpx.Request) -> None:
        nonlocal requests
        requests += 1

    plugin = {"X-Plugin-Platform": PLATFORM, "X-Plugin-Version": VERSION}
    path = f"/hook/{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=30, headers=plugin, event_hooks={"request": [count]}
    ) as archicad:
        registered = await archicad.post(
            "/api/plugins/webhooks/register",
            json={"url": hook_url + path, "events": ["render.completed"]},
            headers=users[0].bearer,
        )
        assert registered.status_code == 201, registered.text

        async def render(user: PluginUser) -> dict[str, Any]:
            response = await archicad.post("/api/plugins/renders", json=submission(), headers=user.bearer)
            assert response.status_code == 202, response.text
            return await wait_final(archicad, response.json()["data"]["renderId"], user.bearer)

        finals = await asyncio.gather(*(render(user) for user in users for _ in range(RENDERS_PER_USER)))
    assert [f["status"] for f in finals] == ["completed"] * RENDERS, finals
    assert {(f["platform"], f["pluginVersion"]) for f in finals} == {(PLATFORM, VERSION)}
    await hooks.wait_for(path, RENDERS_PER_USER)
    return requests, sum(int(f["creditsUsed"]) for f in finals)


async def test_operator_sees_the_platforms_numbers_in_the_charts_and_tables(
    browser: Browser,
    stack: Stack,
    gateway_client: httpx.AsyncClient,
    operator: PluginUser,
    hook_receiver: tuple[Receiver, str],
) -> None:
    hooks, hook_url = hook_receiver
    requests, credits = await create_archicad_traffic(gateway_client, stack, hooks, hook_url)

    summary: dict[str, Any] = {}

    async def telemetry_caught_up() -> bool:
        nonlocal summary
        response = await gateway_client.get(SUMMARY, headers=operator.bearer)
        assert response.status_code == 200, response.text
        summary = response.json()["data"]
        row = _version(_platform(summary, PLATFORM), VERSION)
        return (
            row is not None
            and row["renders"]["created"] == RENDERS
            and row["renders"]["completed"] == RENDERS
            and row["requests"] == requests
            and summary["webhooks"]["succeeded"] >= RENDERS_PER_USER
        )

    await wait_until(telemetry_caught_up, wait_seconds=60, interval=0.5)
    platform = _platform(summary, PLATFORM)
    assert platform is not None
    api = _version(platform, VERSION)
    assert api is not None
    finished = {k: v for k, v in api["renders"].items() if k != "processing"}
    assert finished == {"created": RENDERS, "completed": RENDERS, "failed": 0, "canceled": 0}
    assert (api["activeUsers"], api["successRate"], api["creditsSpent"]) == (USERS, 1.0, credits)

    page, recorder = await open_dashboard(browser, stack)
    await sign_in(page, operator.email, operator.password)
    dashboard = page.get_by_test_id("dashboard")
    await expect(dashboard).to_be_visible()
    await expect(dashboard).to_have_attribute("data-loaded", "1")
    await expect(page.get_by_test_id("login-view")).to_be_hidden()
    await expect(page.get_by_test_id("signed-in-as")).to_have_text(operator.email)

    # The per-platform table: the platform row and its version row equal the API, which equals what was sent.
    platform_row = f'tr[data-level="platform"][data-platform="{PLATFORM}"]'
    version_row = f'tr[data-level="version"][data-platform="{PLATFORM}"][data-version="{VERSION}"]'
    await expect(page.locator(f'[data-testid="table-platforms"] {platform_row} th')).to_have_text("Archicad")
    await expect(page.locator(f'[data-testid="table-platforms"] {version_row} th')).to_have_text(f"v{VERSION}")
    for status in ("created", "processing", "completed", "failed", "canceled"):
        assert await cell_value(page, platform_row, status) == str(platform["renders"][status])
        assert await cell_value(page, version_row, status) == str(api["renders"][status])
    assert await cell_value(page, version_row, "completed") == str(RENDERS)
    assert await cell_value(page, version_row, "requests") == str(requests)
    assert await cell_value(page, version_row, "activeUsers") == str(USERS)
    assert await cell_value(page, version_row, "creditsSpent") == str(credits)
    assert await cell_value(page, version_row, "successRate") == "1"
    await expect(
        page.locator(f'[data-testid="table-platforms"] {version_row} td[data-col="successRate"]')
    ).to_have_text("100.0%")
    for col, key in (("renderTimeP95", "renderTimeMs"), ("queueWaitP95", "queueWaitMs")):
        shown = await cell_value(page, version_row, col)
        assert shown is not None
        assert float(shown) == pytest.approx(api[key]["p95"])

    # The renders chart: an Archicad series whose bars add up to the created renders (ours, plus any other Archicad
    # version's that another test of the session made: none today), then to the completed ones.
    others = [v for v in platform["versions"] if v["pluginVersion"] != VERSION]
    created = RENDERS + sum(v["renders"]["created"] for v in others)
    completed = RENDERS + sum(v["renders"]["completed"] for v in others)
    assert (platform["renders"]["created"], platform["renders"]["completed"]) == (created, completed)
    chart = page.get_by_test_id("chart-renders")
    await expect(chart).to_have_attribute("data-status", "created")
    await expect(chart.locator(f'g.series[data-platform="{PLATFORM}"]')).to_have_attribute("data-total", str(created))
    assert sum(await bar_values(page, "chart-renders", PLATFORM)) == created
    await expect(page.get_by_test_id("legend-renders").locator(f'li[data-series="{PLATFORM}"]')).to_have_text(
        f"Archicad {created}"
    )
    await page.get_by_test_id("renders-status").select_option("completed")
    await expect(chart).to_have_attribute("data-status", "completed")
    assert sum(await bar_values(page, "chart-renders", PLATFORM)) == completed
    await page.get_by_test_id("renders-status").select_option("created")
    await expect(chart).to_have_attribute("data-status", "created")

    # Every chart is drawn; the line charts' points are rates and durations; webhooks include ours.
    assert await page.locator('[data-testid="chart-success-rate"] circle.point').count() >= 1
    rates = await page.locator('[data-testid="chart-success-rate"] circle.point').evaluate_all(
        "points => points.map(p => Number(p.dataset.value))"
    )
    assert all(0 <= r <= 1 for r in rates)
    for series in ("p50", "p95"):
        assert await page.locator(f'[data-testid="chart-render-time"] circle.point[data-series="{series}"]').count()
    assert sum(await bar_values(page, "chart-webhooks", "succeeded")) >= RENDERS_PER_USER

    # KPI tiles agree with the table they summarise.
    cells = page.locator('[data-testid="table-platforms"] tr[data-level="platform"] td[data-col="created"]')
    totals = [int(v) for v in await cells.evaluate_all("cells => cells.map(c => c.dataset.value)")]
    renders_kpi = page.get_by_test_id("kpi-renders").locator(".kpi-value")
    await expect(renders_kpi).to_have_attribute("data-value", str(sum(totals)))
    assert int(
        await page.get_by_test_id("kpi-active-users").locator(".kpi-value").get_attribute("data-value") or 0
    ) >= (USERS)

    # The route table has the render submissions, with their latency percentiles.
    renders_route = page.locator(
        '[data-testid="table-routes"] tr[data-method="POST"][data-route="/api/plugins/renders"]'
    )
    await expect(renders_route).to_have_count(1)
    assert int(await renders_route.locator('td[data-col="requests"]').get_attribute("data-value") or 0) >= RENDERS

    # Another window re-reads both endpoints and still shows the same Archicad renders (per minute now).
    await page.get_by_role("radio", name="Last hour").click()
    await expect(page.get_by_role("radio", name="Last hour")).to_have_attribute("aria-checked", "true")
    await expect(dashboard).to_have_attribute("data-loaded", "2")
    await expect(chart).to_have_attribute("data-step", "minute")
    assert sum(await bar_values(page, "chart-renders", PLATFORM)) >= RENDERS  # ours are minutes old
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(artifacts_dir() / "dashboard.png"), full_page=True)

    # Offline and CSP friendly: nothing from another origin, no console errors, no failed requests.
    assert recorder.urls
    assert recorder.foreign(_origin(stack.gateway_url)) == []
    assert recorder.console_errors == []
    assert recorder.failed == []

    # Signing out forgets the tokens and revokes the refresh token.
    refresh_token = await page.evaluate(
        "JSON.parse(sessionStorage.getItem('renderiq.operator.session') || '{}').refreshToken || null"
    )
    assert refresh_token
    await page.get_by_test_id("sign-out").click()
    await expect(page.get_by_test_id("login-view")).to_be_visible()
    await expect(page.get_by_test_id("login-notice")).to_have_text("Signed out.")
    await expect(dashboard).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('renderiq.operator.session')") is None
    refreshed = await gateway_client.post("/api/plugins/auth/refresh", json={"refresh_token": refresh_token})
    assert refreshed.status_code == 401, refreshed.text
    await page.context.close()


async def test_a_plugin_user_sees_the_403_and_no_data(
    browser: Browser, stack: Stack, gateway_client: httpx.AsyncClient
) -> None:
    user = await sign_up(gateway_client)
    page, recorder = await open_dashboard(browser, stack)
    statuses: dict[str, int] = {}

    def answered(response: Response) -> None:
        statuses.setdefault(urlsplit(response.url).path, response.status)

    page.on("response", answered)

    await sign_in(page, user.email, user.password)
    error = page.get_by_test_id("login-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("not an operator")
    await expect(error).to_contain_text("Operator access token required")  # the API's own message
    await expect(error.get_by_test_id("error-code")).to_have_text("403 INSUFFICIENT_PERMISSIONS")
    await expect(page.get_by_test_id("dashboard")).to_be_hidden()
    await expect(page.locator("[data-testid=table-platforms] tbody tr")).to_have_count(0)
    await expect(page.locator("[data-testid=chart-renders] svg")).to_have_count(0)
    assert await page.get_by_test_id("kpi-renders").locator(".kpi-value").get_attribute("data-value") == ""
    assert statuses.get("/api/plugins/auth/signin") == 200
    assert statuses.get(SUMMARY) == 403
    assert await page.evaluate("sessionStorage.getItem('renderiq.operator.session')") is None
    await expect(page.get_by_label("Email")).to_have_value(user.email)
    await expect(page.get_by_label("Password")).to_have_value("")
    await page.screenshot(path=str(artifacts_dir() / "dashboard-denied.png"), full_page=True)

    assert recorder.foreign(_origin(stack.gateway_url)) == []
    assert recorder.csp_violations() == []
    await page.context.close()


async def test_wrong_password_shows_the_sign_in_error(browser: Browser, stack: Stack, operator: PluginUser) -> None:
    page, _ = await open_dashboard(browser, stack)
    await sign_in(page, operator.email, "not-the-password")
    error = page.get_by_test_id("login-error")
    await expect(error).to_contain_text("Sign-in failed")
    await expect(error.get_by_test_id("error-code")).to_have_text("INVALID_CREDENTIALS")
    await expect(page.get_by_test_id("dashboard")).to_be_hidden()
    await page.context.close()


async def test_the_api_docs_page_renders_every_operation_offline(browser: Browser, stack: Stack) -> None:
    """``/api/plugins/docs``: Swagger UI from the gateway's own files renders the OpenAPI 3.1 document whole."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    recorder = Recorder(page)
    try:
        await page.goto(f"{stack.gateway_url}/api/plugins/docs")
        await page.wait_for_selector(".opblock", timeout=20_000)
        async with httpx.AsyncClient() as http:
            spec = (await http.get(f"{stack.gateway_url}/api/plugins/openapi.json")).json()
        operations = sum(len(ops) for ops in spec["paths"].values())
        assert await page.locator(".opblock").count() == operations
        assert await page.locator(".information-container .title").inner_text() != ""
        assert await page.get_by_text("Unable to render this definition").count() == 0
        assert recorder.foreign(stack.gateway_url) == []
        assert recorder.console_errors == []
        assert recorder.failed == []
        await page.screenshot(path=str(artifacts_dir() / "api-docs.png"), full_page=False)
    finally:
        await context.close()
