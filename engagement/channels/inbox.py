"""The in-app inbox: the outbox row is the message; marking it delivered is the whole send."""

from __future__ import annotations

from engagement.channels.base import OutgoingMessage, SendResult


class InboxChannel:
    def available_for(self, *, patient_ids: list[str]) -> set[str]:
        return set(patient_ids)

    def send(self, message: OutgoingMessage) -> SendResult:
        return SendResult(delivered=True)
