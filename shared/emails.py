"""The one canonical form of an email address: every spelling of an address is one account and one rate limit.

``normalize_email`` is used wherever an address names an account (signup, signin, the operator CLI, ``ADMIN_EMAILS``,
the gateway's per-account sign-in bucket and the migration that normalised existing rows), so two spellings can never
reach two accounts or two limits. Canonical form:

- the whole text NFKC-normalised (fullwidth letters, U+FF20 FULLWIDTH COMMERCIAL AT, U+FF0E FULLWIDTH FULL STOP
  and other compatibility forms become their plain ASCII characters);
- the local part case-folded (``casefold``, then NFKC again: the Unicode "NFKC_Casefold" idea);
- the domain mapped by UTS #46 and encoded as IDNA 2008 A-labels (``idna`` package): ``Bücher.Example`` becomes
  ``xn--bcher-kva.example``; one trailing dot (the DNS root) is dropped;
- the result checked by ``email-validator`` (syntax, lengths, special-use domains), without DNS lookups.

An address that cannot be brought to this form raises ``InvalidEmailError`` (400 ``INVALID_INPUT``, field ``email``;
also a ``ValueError``, so pydantic validators report it the same way).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

import email_validator
import idna
from pydantic import AfterValidator, WithJsonSchema

from shared.errors import DomainError

__all__ = ["MAX_INPUT_CHARS", "InvalidEmailError", "NormalizedEmail", "normalize_email"]

MAX_INPUT_CHARS = 512
"""Longer input is refused before any Unicode work (an address has at most 254 octets; NFKC can expand text)."""


class InvalidEmailError(DomainError, ValueError):
    status_code = 400
    error_code = "INVALID_INPUT"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Invalid email: {reason}", details={"field": "email", "reason": reason})

    def __str__(self) -> str:  # pydantic uses str(exc) as the reason of its validation error
        return str(self.details["reason"])


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def normalize_email(text: str) -> str:
    """The canonical form of ``text`` (see the module docstring), or ``InvalidEmailError``."""
    if not isinstance(text, str) or len(text) > MAX_INPUT_CHARS:
        raise InvalidEmailError("not an email address of a plausible length")
    composed = _nfkc(text.strip())
    local, at, domain = composed.rpartition("@")
    if not at or not local or not domain:
        raise InvalidEmailError("an email address must have the form local@domain")
    local = _nfkc(local.casefold())
    if domain.endswith("."):
        domain = domain[:-1]
    try:
        ascii_domain = idna.encode(domain, uts46=True, std3_rules=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise InvalidEmailError("the domain is not a valid internationalised domain name") from exc
    candidate = f"{local}@{ascii_domain.lower()}"
    try:
        checked = email_validator.validate_email(candidate, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise InvalidEmailError(str(exc)) from exc
    # email-validator may re-normalise the local part (NFC); keep its form so the check and the result agree.
    return f"{checked.local_part}@{checked.ascii_domain.lower()}"


NormalizedEmail = Annotated[
    str,
    AfterValidator(normalize_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": MAX_INPUT_CHARS}),
]
"""A request field holding an email address, delivered to the handler in canonical form."""
