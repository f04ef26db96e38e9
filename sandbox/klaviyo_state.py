"""The sandbox Klaviyo account: profiles, lists, bulk import jobs, and the rules that change them.

Where Klaviyo's behaviour is undocumented the model takes the less forgiving reading, so that a client
that works here does not depend on leniency Klaviyo never promised:

* emails are stored and matched exactly as sent: no trimming, no case folding;
* a bulk job with two profiles for one email is refused as a whole;
* a cancelled bulk job has applied the first half of its profiles;
* ``meta.patch_properties`` inside bulk jobs is ignored (it is accepted by the schema, its effect is not
  documented).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: How long a created or redefined segment reports ``is_processing``.
SEGMENT_PROCESSING_SECONDS = 1.0

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

#: Identity and plain fields a profile write may set (besides ``properties`` and ``location``).
PROFILE_FIELDS = (
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)

_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_TLD = re.compile(r"^[A-Za-z]{2,63}$")


def is_valid_email(email: str) -> bool:
    """Klaviyo-like check: ASCII ``local@domain.tld`` with an alphabetic TLD of two or more letters.

    White space anywhere makes an address invalid (Klaviyo is not documented to trim), and so do
    non-ASCII characters: an internationalised domain must arrive in its ``xn--`` form.
    """
    if not email.isascii() or len(email) > 254 or email.count("@") != 1:
        return False
    local, domain = email.split("@")
    if not local or len(local) > 64 or not _LOCAL_PART.match(local):
        return False
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels):
        return False
    return bool(_TLD.match(labels[-1]))


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def new_profile_id() -> str:
    """A 26-character, ULID-like id: a millisecond timestamp then randomness, Crockford base32."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_short_id(length: int = 6) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


@dataclass
class Profile:
    id: str
    seq: int
    created: datetime
    updated: datetime
    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    organization: str | None = None
    locale: str | None = None
    title: str | None = None
    image: str | None = None
    location: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    consent: str = "NEVER_SUBSCRIBED"
    consent_timestamp: datetime | None = None
    suppression: list[dict[str, str]] = field(default_factory=list)

    @property
    def suppressed(self) -> bool:
        return bool(self.suppression)

    def subscriptions(self) -> dict[str, Any]:
        can_receive = self.consent == "SUBSCRIBED" and not self.suppressed
        return {
            "email": {
                "marketing": {
                    "can_receive_email_marketing": can_receive,
                    "consent": self.consent,
                    "consent_timestamp": iso(self.consent_timestamp),
                    "last_updated": iso(self.consent_timestamp),
                    "method": None,
                    "method_detail": "",
                    "custom_method_detail": None,
                    "double_optin": None,
                    "suppression": list(self.suppression),
                    "list_suppressions": [],
                }
            }
        }

    def state_json(self, list_ids: list[str]) -> dict[str, Any]:
        """The admin view of a profile, including what the public API hides by default."""
        return {
            "id": self.id,
            **{name: getattr(self, name) for name in PROFILE_FIELDS},
            "location": dict(self.location),
            "properties": dict(self.properties),
            "subscriptions": {"email": {"marketing": {"consent": self.consent}}},
            "suppressed": self.suppressed,
            "suppression": list(self.suppression),
            "lists": list_ids,
            "created": iso(self.created),
            "updated": iso(self.updated),
        }


@dataclass
class KlaviyoList:
    id: str
    seq: int
    name: str
    created: datetime
    updated: datetime
    opt_in_process: str | None = "single_opt_in"
    #: profile id -> (join sequence number, joined at); insertion order is join order.
    members: dict[str, tuple[int, datetime]] = field(default_factory=dict)


@dataclass
class KlaviyoSegment:
    """A segment: a stored definition. The sandbox never evaluates it, so it has no members to list."""

    id: str
    seq: int
    name: str
    definition: dict[str, Any]
    created: datetime
    updated: datetime
    #: until this monotonic moment the segment reports ``is_processing`` (Klaviyo builds it after a change)
    processing_until: float = 0.0
    is_active: bool = True
    is_starred: bool = False


@dataclass
class ImportError_:
    """One per-profile failure inside a bulk job (trailing underscore: ``ImportError`` is a builtin)."""

    id: str
    index: int
    code: str
    title: str
    detail: str
    payload: dict[str, Any]


@dataclass
class BulkJob:
    id: str
    seq: int
    created_at: datetime
    started_mono: float
    finish_mono: float
    payloads: list[dict[str, Any]]
    list_ids: list[str]
    status: str = "queued"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    completed_count: int = 0
    failed_count: int = 0
    profile_ids: list[str] = field(default_factory=list)
    errors: list[ImportError_] = field(default_factory=list)
    fail_emails: dict[str, str] = field(default_factory=dict)
    cancel: bool = False
    held: bool = False
    never_finishes: bool = False

    @property
    def expires_at(self) -> datetime:
        return self.created_at + timedelta(days=7)

    @property
    def terminal(self) -> bool:
        return self.status in ("complete", "cancelled")


@dataclass
class Flow:
    id: str
    name: str
    status: str = "live"
    trigger_type: str = "Added to List"


class DuplicateProfile(Exception):
    """An identifier already belongs to another profile."""

    def __init__(self, existing_id: str) -> None:
        super().__init__(existing_id)
        self.existing_id = existing_id


class KlaviyoAccount:
    """All data of the one sandbox account, mutated only from the server's event loop."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.profiles: dict[str, Profile] = {}
        self.by_email: dict[str, str] = {}
        self.by_phone: dict[str, str] = {}
        self.by_external_id: dict[str, str] = {}
        self.lists: dict[str, KlaviyoList] = {}
        self.jobs: dict[str, BulkJob] = {}
        self.segments: dict[str, KlaviyoSegment] = {}
        self.subscription_calls: list[dict[str, Any]] = []
        #: every profile write (bulk job entry, PATCH, import, create), so tests can count writes per email
        self.writes: list[dict[str, Any]] = []
        #: moves on with every change a profile filter can see, so filtered listings can be reused until then
        self.revision = 0
        self._seq = itertools.count(1)

    def next_seq(self) -> int:
        return next(self._seq)

    # -- profiles -----------------------------------------------------------------------------------

    def find_profile(self, attributes: dict[str, Any]) -> Profile | None:
        """Exact-match identity resolution: email first, then external id, then phone."""
        for key, index in (
            ("email", self.by_email),
            ("external_id", self.by_external_id),
            ("phone_number", self.by_phone),
        ):
            value = attributes.get(key)
            if isinstance(value, str) and value in index:
                return self.profiles[index[value]]
        return None

    def owner_of(self, attributes: dict[str, Any]) -> str | None:
        """The id of a profile holding any identifier in ``attributes``, if any."""
        profile = self.find_profile(attributes)
        return profile.id if profile else None

    def create_profile(self) -> Profile:
        moment = now_utc()
        profile = Profile(id=new_profile_id(), seq=self.next_seq(), created=moment, updated=moment)
        self.profiles[profile.id] = profile
        self.revision += 1
        return profile

    def _reindex(self, profile: Profile, name: str, old: Any, new: Any) -> None:
        index = {
            "email": self.by_email,
            "phone_number": self.by_phone,
            "external_id": self.by_external_id,
        }.get(name)
        if index is None:
            return
        if isinstance(old, str) and index.get(old) == profile.id:
            del index[old]
        if isinstance(new, str):
            owner = index.get(new)
            if owner is not None and owner != profile.id:
                raise DuplicateProfile(owner)
            index[new] = profile.id

    def write_profile(self, profile: Profile, attributes: dict[str, Any], *, null_clears: bool) -> None:
        """Apply a profile write's ``attributes``.

        :param null_clears: true for PATCH and profile-import (a null removes the value), false for bulk
            jobs, where Klaviyo ignores nulls
        :raises DuplicateProfile: when a new identifier belongs to another profile (nothing is written)
        """
        # Check every identifier before writing anything, so a conflict leaves the profile untouched.
        for name, index in (
            ("email", self.by_email),
            ("phone_number", self.by_phone),
            ("external_id", self.by_external_id),
        ):
            value = attributes.get(name)
            owner = index.get(value) if isinstance(value, str) else None
            if owner is not None and owner != profile.id:
                raise DuplicateProfile(owner)
        self.revision += 1
        self.writes.append(
            {
                "seq": len(self.writes) + 1,
                "profile_id": profile.id,
                "email": attributes.get("email", profile.email),
            }
        )
        for name in PROFILE_FIELDS:
            if name not in attributes:
                continue
            value = attributes[name]
            if value is None and not null_clears:
                continue
            self._reindex(profile, name, getattr(profile, name), value)
            setattr(profile, name, value)

        location = attributes.get("location")
        if isinstance(location, dict):
            for key, value in location.items():
                if value is None:
                    if null_clears:
                        profile.location.pop(key, None)
                else:
                    profile.location[key] = value
        elif location is None and "location" in attributes and null_clears:
            profile.location.clear()

        if "properties" in attributes:
            properties = attributes["properties"]
            if properties is None:
                if null_clears:
                    profile.properties.clear()
            else:
                for key, value in properties.items():
                    if value is None:
                        if null_clears:
                            profile.properties.pop(key, None)
                    else:
                        # An empty list is a value like any other and is stored as given.
                        profile.properties[key] = value
        profile.updated = now_utc()

    def patch_properties(self, profile: Profile, patch: dict[str, Any]) -> None:
        """Apply ``meta.patch_properties`` (PATCH and profile-import only)."""
        for key, value in (patch.get("append") or {}).items():
            current = profile.properties.get(key)
            additions = value if isinstance(value, list) else [value]
            # Appending to a non-list replaces it with a fresh list, as observed on Klaviyo.
            profile.properties[key] = (list(current) if isinstance(current, list) else []) + additions
        for key, value in (patch.get("unappend") or {}).items():
            current = profile.properties.get(key)
            removals = value if isinstance(value, list) else [value]
            if isinstance(current, list):
                profile.properties[key] = [item for item in current if item not in removals]
        unset = patch.get("unset")
        for key in [unset] if isinstance(unset, str) else unset or []:
            profile.properties.pop(key, None)
        profile.updated = now_utc()
        self.revision += 1

    def profile_lists(self, profile_id: str) -> list[str]:
        return [list_id for list_id, record in self.lists.items() if profile_id in record.members]

    # -- lists --------------------------------------------------------------------------------------

    def create_list(self, name: str, opt_in_process: str | None = None) -> KlaviyoList:
        moment = now_utc()
        list_id = new_short_id()
        while list_id in self.lists:
            list_id = new_short_id()
        record = KlaviyoList(
            id=list_id,
            seq=self.next_seq(),
            name=name,
            created=moment,
            updated=moment,
            opt_in_process=opt_in_process or "single_opt_in",
        )
        self.lists[record.id] = record
        return record

    def add_members(self, record: KlaviyoList, profile_ids: list[str]) -> None:
        moment = now_utc()
        for profile_id in profile_ids:
            if profile_id not in record.members:
                record.members[profile_id] = (self.next_seq(), moment)

    # -- segments -----------------------------------------------------------------------------------

    def create_segment(
        self, name: str, definition: dict[str, Any], *, is_starred: bool = False
    ) -> KlaviyoSegment:
        moment = now_utc()
        segment_id = new_short_id()
        while segment_id in self.segments or segment_id in self.lists:
            segment_id = new_short_id()
        record = KlaviyoSegment(
            id=segment_id,
            seq=self.next_seq(),
            name=name,
            definition=definition,
            created=moment,
            updated=moment,
            processing_until=time.monotonic() + SEGMENT_PROCESSING_SECONDS,
            is_starred=is_starred,
        )
        self.segments[record.id] = record
        return record

    # -- bulk jobs ----------------------------------------------------------------------------------

    def advance_jobs(self, now_mono: float | None = None) -> None:
        """Move jobs along their timeline; writes happen at completion, in completion order."""
        now_mono = time.monotonic() if now_mono is None else now_mono
        due = sorted(
            (job for job in self.jobs.values() if not job.terminal),
            key=lambda job: (job.finish_mono, job.seq),
        )
        for job in due:
            if job.status == "queued" and now_mono >= job.started_mono:
                job.status = "processing"
                job.started_at = now_utc()
            if (
                job.status == "processing"
                and now_mono >= job.finish_mono
                and not (job.held or job.never_finishes)
            ):
                self._finish(job)

    def release_jobs(self) -> int:
        released = 0
        for job in self.jobs.values():
            if job.held and not job.terminal:
                job.held = False
                job.finish_mono = min(job.finish_mono, time.monotonic())
                released += 1
        return released

    def _finish(self, job: BulkJob) -> None:
        count = len(job.payloads) // 2 if job.cancel else len(job.payloads)
        for index, payload in enumerate(job.payloads[:count]):
            attributes = payload.get("attributes", {})
            email = attributes.get("email")
            if isinstance(email, str) and email in job.fail_emails:
                job.errors.append(
                    ImportError_(
                        id=new_short_id(20),
                        index=index,
                        code="invalid",
                        title="Invalid input.",
                        detail=job.fail_emails[email],
                        payload=payload,
                    )
                )
                job.failed_count += 1
                continue
            profile = self.find_profile(attributes)
            if profile is None:
                profile = self.create_profile()
            try:
                self.write_profile(profile, attributes, null_clears=False)
            except DuplicateProfile:
                job.errors.append(
                    ImportError_(
                        id=new_short_id(20),
                        index=index,
                        code="duplicate_profile",
                        title="Conflict.",
                        detail="A profile already exists with one of these identifiers.",
                        payload=payload,
                    )
                )
                job.failed_count += 1
                continue
            job.profile_ids.append(profile.id)
            job.completed_count += 1
        for list_id in job.list_ids:
            record = self.lists.get(list_id)
            if record is not None:
                self.add_members(record, job.profile_ids)
        job.status = "cancelled" if job.cancel else "complete"
        job.completed_at = now_utc()
