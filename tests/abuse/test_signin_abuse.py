"""Sign-in abuse, attacked from outside through the gateway's public port (issue #13, part 3).

- Guesses spread over many client addresses still lock the account (per-account limit in auth's database).
- Every spelling of an address (case, fullwidth, IDNA) is one account with one limit, at auth and at the gateway.
- Unknown addresses answer exactly like known ones.
- With Redis stopped the limits still hold (gateway in-process fallback; the account lock-out never needed Redis).

The session stack runs auth's default lock-out (5 free failures, then 2 s doubling): small enough to wait out.
"""

import asyncio
import itertools
import random
import time
import uuid

import httpx

from services.gateway.main import create_app as create_gateway
from shared.engines import EmbeddedRedis
from shared.testing.fixtures import PluginUser, Stack, gateway_settings, sign_up
from shared.testing.servers import serve_in_thread

SIGNIN = "/api/plugins/auth/signin"
FREE_FAILURES = 5  # auth's default AUTH_SIGNIN_FREE_FAILURES
_ips = itertools.count(1)


def fresh_ip() -> str:
    """A client address no other request of the session used (the gateway trusts X-Forwarded-For from loopback)."""
    n = next(_ips) + 1000 * (uuid.uuid4().int % 200)
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def spellings(email: str) -> list[str]:
    """Forty distinct spellings of one address: each character upper, lower or fullwidth, ``@`` as U+FF20 or not,
    dots as U+3002 or U+FF0E (UTS #46 and NFKC separators), sometimes a root dot or surrounding spaces."""
    local, domain = email.lower().split("@")
    out: list[str] = []
    seed = 0
    while len(out) < 40:
        rng = random.Random(seed)
        seed += 1

        def spell(text: str, rng: random.Random = rng) -> str:
            chars = []
            for c in text:
                choice = rng.randrange(3)
                chars.append(c.upper() if choice == 0 else chr(ord(c) + 0xFEE0) if choice == 1 and c.isalnum() else c)
            return "".join(chars)

        dot = rng.choice([".", "\u3002", "\uff0e"])
        variant = spell(local) + rng.choice(["@", "\uff20"]) + dot.join(spell(p) for p in domain.split("."))
        variant += rng.choice(["", "", "."])
        variant = rng.choice(["", " "]) + variant + rng.choice(["", "\t"])
        if variant not in out:
            out.append(variant)
    return out


async def signin(http: httpx.AsyncClient, email: str, password: str, ip: str | None = None) -> httpx.Response:
    return await http.post(
        SIGNIN, json={"email": email, "password": password}, headers={"X-Forwarded-For": ip or fresh_ip()}
    )


def assert_locked(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    body = response.json()
    assert (body["success"], body["errorCode"]) == (False, "RATE_LIMIT_EXCEEDED")
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    return retry_after


async def signin_after_lockout(http: httpx.AsyncClient, email: str, password: str, within: float) -> httpx.Response:
    """Sign in once the lock-out is over, waiting as ``Retry-After`` says (from fresh addresses each time)."""
    deadline = time.monotonic() + within
    while True:
        response = await signin(http, email, password)
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(int(response.headers["retry-after"]))


async def test_guesses_from_forty_addresses_lock_the_account(gateway_client: httpx.AsyncClient) -> None:
    victim = await sign_up(gateway_client)
    codes = [(await signin(gateway_client, victim.email, f"guess-{i}")).status_code for i in range(40)]
    assert codes[:FREE_FAILURES] == [401] * FREE_FAILURES
    assert codes.count(429) >= 30, codes  # each further guess waits out a doubling lock-out
    assert set(codes) == {401, 429}

    # During the lock-out the right password is refused too, without being checked, from yet another address.
    locked = await signin(gateway_client, victim.email, victim.password)
    assert_locked(locked)
    assert "access_token" not in locked.text

    # After the window the owner gets in, and a success forgets the failures.
    ok = await signin_after_lockout(gateway_client, victim.email, victim.password, within=40)
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"]["id"] == victim.user_id
    again = [(await signin(gateway_client, victim.email, "wrong")).status_code for _ in range(FREE_FAILURES - 1)]
    assert again == [401] * (FREE_FAILURES - 1)


async def test_unknown_addresses_answer_like_known_ones(gateway_client: httpx.AsyncClient) -> None:
    known = await sign_up(gateway_client)
    unknown = f"nobody-{uuid.uuid4().hex[:10]}@example.com"
    known_codes = [(await signin(gateway_client, known.email, "wrong-pw")).status_code for _ in range(7)]
    unknown_responses = [await signin(gateway_client, unknown, "wrong-pw") for _ in range(7)]
    assert known_codes == [401] * FREE_FAILURES + [429] * 2
    assert [r.status_code for r in unknown_responses] == known_codes
    assert unknown_responses[0].json()["errorCode"] == "INVALID_CREDENTIALS"
    assert_locked(unknown_responses[-1])


async def test_every_spelling_is_one_account_with_one_limit(gateway_client: httpx.AsyncClient) -> None:
    owner = await sign_up(gateway_client, email=f"Spell-{uuid.uuid4().hex[:8]}@Example.com")
    canonical = owner.email.lower()
    variants = spellings(owner.email)
    assert len(set(variants)) == 40
    # Another spelling signs in to the same account, and cannot sign up a second one.
    same = await signin(gateway_client, variants[3], owner.password)  # fully fullwidth
    assert same.status_code == 200, same.text
    assert (same.json()["user"]["id"], same.json()["user"]["email"]) == (owner.user_id, canonical)
    for spelling in (variants[0], variants[1], variants[5]):
        dup = await gateway_client.post("/api/plugins/auth/signup", json={"email": spelling, "password": "x" * 12})
        assert dup.status_code == 409, dup.text
        assert dup.json()["errorCode"] == "ALREADY_EXISTS"

    # Forty wrong guesses from one address, each under another spelling: one account, one limit.
    ip = fresh_ip()
    codes = [(await signin(gateway_client, v, "wrong-password", ip)).status_code for v in variants]
    assert codes[:FREE_FAILURES] == [401] * FREE_FAILURES
    assert codes.count(401) <= FREE_FAILURES + 1, codes
    assert codes.count(429) >= 40 - FREE_FAILURES - 1
    ok = await signin_after_lockout(gateway_client, variants[1], owner.password, within=40)
    assert ok.status_code == 200, ok.text
    assert ok.json()["user"]["id"] == owner.user_id


async def test_limits_hold_with_redis_stopped(stack: Stack, own_redis: EmbeddedRedis) -> None:
    """A gateway replica on its own Redis, 3 sign-ins per minute per address + account: spellings share a bucket,
    and when Redis stops the bucket lives on in process; the per-account lock-out does not need Redis at all."""
    settings = gateway_settings(stack, redis_url=own_redis.url, auth_rate_limit_per_minute=3)
    with serve_in_thread(create_gateway(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            first: PluginUser = await sign_up(http)
            ip = fresh_ip()
            variants = spellings(first.email)
            codes = [(await signin(http, v, "wrong", ip)).status_code for v in variants[:4]]
            assert codes == [401, 401, 401, 429], "the gateway's bucket is per account, not per spelling"

            own_redis.stop()
            second = await sign_up(http)
            ip = fresh_ip()
            codes = [(await signin(http, v, "wrong", ip)).status_code for v in spellings(second.email)[:5]]
            assert codes == [401, 401, 401, 429, 429], "Redis down: the gateway still limits, in process"

            third = await sign_up(http)
            codes = [(await signin(http, third.email, f"guess-{i}")).status_code for i in range(12)]
            assert codes[:FREE_FAILURES] == [401] * FREE_FAILURES
            assert codes.count(429) >= 12 - FREE_FAILURES - 1, "Redis down: the account lock-out still holds"
            assert_locked(await signin(http, third.email, third.password))
