"""Normalising and validating email addresses before anything is compared or sent.

Klaviyo rejects a whole bulk import when one address in it is malformed, so every address is checked
here first. The rules follow RFC 5321/5322 for what real mailboxes use (dot-atom local parts,
host-name domains) rather than a narrower pattern: ``o'neil@`` and ``carol+news@`` are valid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from itertools import compress, count, repeat
from operator import and_, is_not, itemgetter, not_

import idna

# RFC 5322 atext; dots are checked separately because their position matters.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ALPHA_TLD = re.compile(r"[a-z]{2,63}")
# A lower-cased dot-atom local part (no leading, trailing or double dot) at a domain of host-name
# characters; the domain's labels are checked by _canonical_domain.
_PLAIN_ADDRESS = re.compile(
    r"([a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@([a-z0-9.-]+)"
)
# The same as a yes or no, within the length limits: at most 64 characters before the "@" and 254 in
# all. The possessive quantifiers never give back what they matched, which cannot change the answer
# here (no atom holds a dot or an "@") but halves the time.
_PLAIN_WITHIN_LIMITS = re.compile(
    r"(?=[^@]{1,64}@)(?=.{1,254}\Z)"
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]++(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]++)*+@[a-z0-9.-]++"
)
# Domains seen by normalise_plain_emails -> whether they are already in canonical form; cleared when full.
_SETTLED_DOMAINS: dict[str, bool] = {}
_MAX_SETTLED_DOMAINS = 65_536

# Besides Unicode white space, exports carry zero-width characters and byte-order marks copied
# from spreadsheets; none of them can be part of an address.
_SURROUNDING_JUNK = " \t\r\n\v\f\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b\u2028\u2029\u202f\u205f\u3000\ufeff"

_MAX_LOCAL = 64
_MAX_ADDRESS = 254


class InvalidEmail(ValueError):
    """An address that cannot be sent to Klaviyo.

    :param reason: a short description of what is wrong; it never contains the address itself,
        so it can be logged and counted.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalise_email(raw: object) -> str:
    """Return the one canonical form of an email address, or raise :class:`InvalidEmail`.

    Surrounding white space is trimmed, the address is lower-cased, and an internationalised domain
    is converted to its ASCII (``xn--``) form with UTS-46 mapping, so that ``Ana@Example.com``,
    ``" ana@example.com"`` and the Unicode and punycode spellings of a domain all compare equal.

    :param raw: the value found in the export; anything but a string is invalid.
    """
    if not isinstance(raw, str):
        raise InvalidEmail("not a string")
    address = raw.strip(_SURROUNDING_JUNK).lower()

    # Nearly every address is a plain dot-atom at an ASCII host name: one match settles it, with the
    # domain checked (and cached) as below. Anything else takes the step-by-step checks that name
    # what is wrong.
    plain = _PLAIN_ADDRESS.fullmatch(address)
    if plain is not None and plain.end(1) <= _MAX_LOCAL:
        normalised = f"{plain[1]}@{_canonical_domain(plain[2])}"
        if len(normalised) <= _MAX_ADDRESS:
            return normalised
    if not address:
        raise InvalidEmail("empty")

    at_count = address.count("@")
    if at_count == 0:
        raise InvalidEmail("missing @")
    if at_count > 1:
        raise InvalidEmail("more than one @")
    local, domain = address.split("@")

    _check_local_part(local)
    ascii_domain = _canonical_domain(domain)
    normalised = f"{local}@{ascii_domain}"
    if len(normalised) > _MAX_ADDRESS:
        raise InvalidEmail("address longer than 254 characters")
    return normalised


def normalise_plain_emails(raws: Sequence[str]) -> tuple[list[str], list[int]]:
    """Normalise many addresses at once, as :func:`normalise_email` would, where that needs no step each.

    Returns the trimmed, lower-cased addresses and the positions of those that are not plain
    (dot-atom local part, ASCII host name in canonical form, within the length limits): only those
    need :func:`normalise_email`, which also says what is wrong with an invalid one. Every other
    position already holds what :func:`normalise_email` returns. Each pass runs inside ``map``, so
    millions of addresses cost no Python step each.

    :param raws: the addresses as found, all strings.
    """
    lowered = list(map(str.lower, map(str.strip, raws, repeat(_SURROUNDING_JUNK))))
    plain = list(map(is_not, map(_PLAIN_WITHIN_LIMITS.fullmatch, lowered), repeat(None)))
    domains = list(map(itemgetter(2), map(str.rpartition, lowered, repeat("@"))))
    new_domains = set(compress(domains, plain)).difference(_SETTLED_DOMAINS)
    if len(_SETTLED_DOMAINS) + len(new_domains) > _MAX_SETTLED_DOMAINS:
        _SETTLED_DOMAINS.clear()
    for domain in new_domains:
        _SETTLED_DOMAINS[domain] = _is_canonical_domain(domain)
    settled = map(_SETTLED_DOMAINS.get, domains, repeat(False))
    others = list(compress(count(), map(not_, map(and_, plain, settled))))
    return lowered, others


def _is_canonical_domain(domain: str) -> bool:
    try:
        return _canonical_domain(domain) == domain
    except InvalidEmail:
        return False


def is_valid_email(raw: object) -> bool:
    """Whether :func:`normalise_email` accepts ``raw``.

    :param raw: any value.
    """
    try:
        normalise_email(raw)
    except InvalidEmail:
        return False
    return True


def email_domain(email: str) -> str:
    """Return the domain of a normalised address.

    :param email: an address returned by :func:`normalise_email`.
    """
    return email.rpartition("@")[2]


def _check_local_part(local: str) -> None:
    if not local:
        raise InvalidEmail("empty local part")
    if len(local) > _MAX_LOCAL:
        raise InvalidEmail("local part longer than 64 characters")
    if not _LOCAL_PART.fullmatch(local):
        raise InvalidEmail("invalid character in local part")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidEmail("misplaced dot in local part")


# Domains repeat far more than addresses do (a few providers hold most mailboxes), so caching the
# IDNA work keeps normalising millions of lines cheap.
@lru_cache(maxsize=65_536)
def _canonical_domain(domain: str) -> str:
    if not domain:
        raise InvalidEmail("empty domain")
    # Plain ASCII host names need no IDNA processing; punycode labels do, to be checked and
    # brought to canonical form.
    needs_idna = not domain.isascii() or "xn--" in domain
    ascii_domain = _idna_domain(domain) if needs_idna else domain

    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise InvalidEmail("domain has no top-level domain")
    if len(ascii_domain) > 253:
        raise InvalidEmail("domain longer than 253 characters")
    for label in labels:
        if not label:
            raise InvalidEmail("empty label in domain")
        if not _LDH_LABEL.fullmatch(label):
            raise InvalidEmail("invalid character in domain")
    tld = labels[-1]
    if tld.startswith("xn--"):
        # Klaviyo documents no validator; integrators report it refusing anything but letters in the
        # top-level domain, and one refused address fails a whole bulk import, so these are not sent.
        raise InvalidEmail("internationalised top-level domain, which Klaviyo refuses")
    if not _ALPHA_TLD.fullmatch(tld):
        raise InvalidEmail("invalid top-level domain")
    return ascii_domain


def _idna_domain(domain: str) -> str:
    try:
        # Non-transitional UTS-46 processing is what IDNA2008 registries and browsers use: it keeps
        # "ß" and final sigma instead of folding them, so the punycode form is the registered one.
        return idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise InvalidEmail("invalid internationalised domain") from None
