"""Delivery channels behind one interface: `backend_for(channel).send(...)`."""

from __future__ import annotations

from engagement.channels.base import (
    ChannelBackend,
    OutgoingMessage,
    RetryableSendError,
    SendResult,
    TerminalSendError,
)
from engagement.channels.email import EmailChannel
from engagement.channels.inbox import InboxChannel
from engagement.channels.push import PushChannel
from engagement.models import Channel

_BACKENDS: dict[str, ChannelBackend] = {}


def backend_for(channel: str) -> ChannelBackend:
    """The channel's backend (one per process; push clients keep their connections)."""
    if channel not in _BACKENDS:
        factories: dict[str, type[ChannelBackend]] = {
            Channel.PUSH: PushChannel,
            Channel.EMAIL: EmailChannel,
            Channel.INBOX: InboxChannel,
        }
        _BACKENDS[channel] = factories[channel]()
    return _BACKENDS[channel]


def reset_backends() -> None:
    """Drop cached backends (tests change provider settings)."""
    _BACKENDS.clear()


__all__ = [
    "ChannelBackend",
    "OutgoingMessage",
    "RetryableSendError",
    "SendResult",
    "TerminalSendError",
    "backend_for",
    "reset_backends",
]
