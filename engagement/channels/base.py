"""The channel interface: a backend sends one rendered message for one outbox row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: str
    idempotency_key: str
    patient_id: str
    # What may be shown outside the app (lock screen, mailbox): generic unless the template
    # explicitly allows its own text there.
    title: str
    body: str
    # The in-app inbox item of the same reminder, for the app to open from a notification.
    reminder_id: str = ""


@dataclass(frozen=True)
class SendResult:
    delivered: bool  # True when the channel itself is the destination (the in-app inbox)
    provider_message_id: str = ""


class RetryableSendError(Exception):
    """May succeed later (network, 429, 5xx): the row is rescheduled with backoff."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)


class TerminalSendError(Exception):
    """Will not succeed (unknown device, refused recipient): the row fails."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)


class ChannelBackend(Protocol):
    def available_for(self, *, patient_ids: list[str]) -> set[str]:
        """The patients (ids as strings) this channel can reach at all."""
        ...

    def send(self, message: OutgoingMessage) -> SendResult: ...
