"""Masking email addresses and API keys in text that may reach a log, an exception or XCom.

Klaviyo echoes addresses in its error details and request URLs carry them in ``filter=`` clauses,
often percent-encoded, so masking has to find them in every spelling, not only the plain one.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# A percent escape is only taken as part of a local part when it decodes to an RFC 5322 atext
# character: "%22" (a quote) or "%5B" must stay a delimiter, or a URL-encoded filter would be
# swallowed whole. "%25" (a percent sign) is left out so that double-encoded text is not either.
_ATEXT_ESCAPES = "|".join(f"%{ord(c):02X}" for c in "!#$&'*+/=?^`{|}~")
_LOCAL = rf"(?:[A-Za-z0-9!#$&'*+/=?^_`{{|}}~.-]|%(?![0-9A-Fa-f]{{2}})|(?i:{_ATEXT_ESCAPES}))+"
# "%40" is "@" percent-encoded once, "%2540" twice; "\u0040" is how some JSON encoders write it.
_AT = r"(?:@|%40|%2540|\\u0040)"
# Domain labels may hold non-ASCII letters (IDN) or percent-encoded UTF-8 bytes (always >= %80).
_LABEL = r"(?:[^\W_]|%[89A-Fa-f][0-9A-Fa-f])(?:[^\W_]|-|%[89A-Fa-f][0-9A-Fa-f])*"
# The look-behinds stop a match from starting inside a percent escape such as the "22" of "%22".
_EMAIL_IN_TEXT = re.compile(
    rf"(?<!%)(?<!%[0-9A-Fa-f])(?P<local>{_LOCAL})(?P<at>{_AT})(?P<domain>{_LABEL}(?:\.{_LABEL})*)",
    re.IGNORECASE,
)
_PRIVATE_KEY = re.compile(r"(?<![A-Za-z0-9])pk_[A-Za-z0-9]+")

_KEY_MASK = "pk_***"


def mask_email(email: str) -> str:
    """Return a masked form of an address that shows its shape but not who it is.

    The first character of the local part and of the domain and the top-level domain stay visible,
    which is enough to tell a typo in a domain from a rejected mailbox: ``ana@example.com`` becomes
    ``a**@e******.com``. Text without an ``@`` is masked whole, so this is safe on invalid input.

    :param email: an address, normalised or not.
    """
    local, at, domain = email.rpartition("@")
    if not at:
        return _mask_word(email)
    head, dot, tld = domain.rpartition(".")
    masked_domain = f"{_mask_word(head)}.{tld}" if dot and head else _mask_word(domain)
    return f"{_mask_word(local)}@{masked_domain}"


def redact(text: str) -> str:
    """Mask every email address and Klaviyo private key in ``text``.

    Addresses are found plain, percent-encoded (``%40``, also inside ``filter=any(email,[...])``
    query strings) and JSON-escaped; each is replaced by :func:`mask_email` of its decoded form, the
    separator left as it was found. Private keys (``pk_...``) become ``pk_***``.

    :param text: an error detail, a URL or any message about to be logged or raised.
    """
    text = _PRIVATE_KEY.sub(_KEY_MASK, text)
    return _EMAIL_IN_TEXT.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    local = unquote(unquote(match["local"]))
    domain = unquote(unquote(match["domain"]))
    masked_local, _, masked_domain = mask_email(f"{local}@{domain}").partition("@")
    return f"{masked_local}{match['at']}{masked_domain}"


def _mask_word(word: str) -> str:
    # A one-character word would be shown whole by the keep-the-first-character rule.
    if len(word) < 2:
        return "*"
    return word[0] + "*" * (len(word) - 1)
