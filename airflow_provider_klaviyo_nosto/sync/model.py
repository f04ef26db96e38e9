"""Value types shared by the planner, the applied-state files and the push tasks."""

from __future__ import annotations

from dataclasses import dataclass

#: Owner key of contacts whose only change is membership of the address-book list.
ADDRESS_BOOK_KEY = "address-book"


@dataclass(frozen=True)
class Segment:
    """A Nosto segment chosen for syncing, with its name as the catalogue spells it now.

    :param id: Nosto's segment id; segments are tracked by id because names change.
    :param name: the current catalogue name, written into the Klaviyo property.
    """

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ContactRecord:
    """What Klaviyo holds (or should hold) for one contact, as far as this sync is concerned.

    Records are immutable and hashable so that the millions of contacts sharing one membership can
    share one record object.

    :param in_address_book: whether the contact is a member of the address-book list.
    :param segment_ids: ids of the chosen segments the contact is in, sorted.
    :param value: the property value written to Klaviyo: sorted segment names.
    """

    in_address_book: bool
    segment_ids: tuple[str, ...]
    value: tuple[str, ...]


#: The record of a contact this sync never wrote; a journal line carrying it drops the contact.
EMPTY_RECORD = ContactRecord(False, (), ())


@dataclass(frozen=True, slots=True)
class ContactChange:
    """One contact whose desired record differs from the applied one.

    :param email: the normalised email address.
    :param old: the record last confirmed by Klaviyo (``EMPTY_RECORD`` for a contact never applied).
    :param new: the record this run wants Klaviyo to hold.
    """

    email: str
    old: ContactRecord
    new: ContactRecord

    @property
    def leaves_address_book(self) -> bool:
        return self.old.in_address_book and not self.new.in_address_book

    @property
    def joins_address_book(self) -> bool:
        return self.new.in_address_book and not self.old.in_address_book

    @property
    def value_changed(self) -> bool:
        return self.old.value != self.new.value
