"""``shared.emails.normalize_email``: every spelling of an address is one canonical string; junk is refused."""

import orjson
import pytest

from services.auth.config import Settings as AuthSettings
from services.gateway.ratelimit import account_of
from shared.emails import InvalidEmailError, normalize_email

CANONICAL = "alice@example.com"
SPELLINGS = [
    "alice@example.com",
    "Alice@Example.COM",
    "  ALICE@EXAMPLE.COM\t",
    # all fullwidth, @ and dot included
    "\uff41\uff4c\uff49\uff43\uff45\uff20\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d",
    "alice@\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com",  # fullwidth capitals in the domain only
    "alice\uff20example.com",  # fullwidth commercial at
    "alice@example\u3002com",  # ideographic full stop: a label separator under UTS #46
    "alice@example.com.",  # the DNS root
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_is_one_address(spelling: str) -> None:
    assert normalize_email(spelling) == CANONICAL


def test_idn_domains_become_a_labels_and_are_stable() -> None:
    assert normalize_email("Jos\u00e9@B\u00fccher.Example.org") == "jos\u00e9@xn--bcher-kva.example.org"
    assert normalize_email("jos\u00e9@xn--bcher-kva.example.org") == "jos\u00e9@xn--bcher-kva.example.org"
    # Decomposed (e + combining acute) and composed spellings are the same address.
    assert normalize_email("Jose\u0301@example.org") == normalize_email("Jos\u00c9@example.org")
    # IDNA 2008 keeps sharp s distinct in domains (a different DNS name), while the local part is case-folded.
    assert normalize_email("x@stra\u00dfe.de") != normalize_email("x@strasse.de")


@pytest.mark.parametrize("spelling", [*SPELLINGS, "Jos\u00e9@B\u00fccher.Example.org", "MiXeD+Tag@Sub.Example.net"])
def test_normalisation_is_idempotent(spelling: str) -> None:
    once = normalize_email(spelling)
    assert normalize_email(once) == once


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not-an-email",
        "@example.com",
        "alice@",
        "a b@example.com",
        "alice@exa mple.com",
        "alice@-bad-.com",
        "alice@localhost",
        "alice@example..com",
        "a" * 600 + "@example.com",
        "alice@xn--zz.com",  # not valid punycode
        "alice@\u0000.com",
    ],
)
def test_refuses_what_cannot_be_normalised(text: str) -> None:
    with pytest.raises(InvalidEmailError) as refused:
        normalize_email(text)
    error = refused.value
    assert (error.status_code, error.error_code, error.details["field"]) == (400, "INVALID_INPUT", "email")
    assert error.details["reason"]
    assert isinstance(error, ValueError)  # pydantic validators turn it into a 400 on the field


def test_admin_emails_match_any_spelling() -> None:
    admins = " Ops@EXAMPLE.com , not an address ,\uff42\uff4f\uff53\uff53@example.com"
    settings = AuthSettings(app_env="dev", admin_emails=admins)
    assert settings.admin_email_set() == frozenset({"ops@example.com", "boss@example.com"})


def test_gateway_bucket_is_per_address_not_per_spelling() -> None:
    buckets = {account_of(orjson.dumps({"email": s, "password": "x"})) for s in SPELLINGS}
    assert buckets == {CANONICAL}
    junk = {account_of(b'{"email": "junk one"}'), account_of(b'{"email": "junk two"}')}
    assert len(junk) == 2
    assert all(b.startswith("invalid:") and "junk" not in b for b in junk)
