"""Push notifications: APNs (HTTP/2, token auth) and FCM (HTTP v1 through pyfcm).

- FCM: `pyfcm` (maintained, HTTP v1 API, service-account OAuth through google-auth, built on
  `requests`). Its own sleep-and-retry on Retry-After is replaced: retries are the outbox's job.
- APNs: Apple's provider API is one HTTP/2 POST per notification with an ES256 JWT. The Python
  APNs libraries are either unmaintained (apns2, on the dead `hyper`) or asyncio-only (aioapns),
  so this is a small client on `httpx` with HTTP/2 (`h2`) and PyJWT.

A notification carries the generic text unless the template allows its own, the delivery id
(for the app to open the inbox item) and a collapse id derived from the idempotency key, so a
resend after a crash replaces rather than duplicates the notification on the device.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import requests
from django.conf import settings
from django.utils import timezone
from pyfcm import FCMNotification  # type: ignore[import-untyped]
from pyfcm import errors as fcm_errors
from requests.adapters import HTTPAdapter

from engagement.channels.base import (
    OutgoingMessage,
    RetryableSendError,
    SendResult,
    TerminalSendError,
)
from engagement.models import Device

logger = logging.getLogger(__name__)

APNS_PRODUCTION = "https://api.push.apple.com"
APNS_SANDBOX = "https://api.sandbox.push.apple.com"


@dataclass(frozen=True)
class ProviderOutcome:
    ok: bool
    retryable: bool = False
    unregistered: bool = False
    code: str = ""
    message_id: str = ""


def collapse_id(idempotency_key: str) -> str:
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]  # APNs: at most 64 bytes


class ApnsClient:
    """Apple Push Notification service provider API over HTTP/2 with token-based auth."""

    JWT_LIFETIME_SECONDS = 50 * 60  # Apple: refresh between 20 and 60 minutes

    def __init__(
        self,
        *,
        key_pem: str,
        key_id: str,
        team_id: str,
        topic: str,
        use_sandbox: bool = False,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.key_pem = key_pem
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.base_url = APNS_SANDBOX if use_sandbox else APNS_PRODUCTION
        self.client = httpx.Client(
            http2=transport is None,
            timeout=timeout,
            follow_redirects=False,
            transport=transport,
        )
        self._jwt = ""
        self._jwt_issued = 0.0
        self._lock = threading.Lock()

    def provider_token(self) -> str:
        with self._lock:
            now = time.time()
            if not self._jwt or now - self._jwt_issued > self.JWT_LIFETIME_SECONDS:
                self._jwt = jwt.encode(
                    {"iss": self.team_id, "iat": int(now)},
                    self.key_pem,
                    algorithm="ES256",
                    headers={"kid": self.key_id},
                )
                self._jwt_issued = now
            return self._jwt

    def send(self, *, device_token: str, message: OutgoingMessage) -> ProviderOutcome:
        payload = {
            "aps": {"alert": {"title": message.title, "body": message.body}, "sound": "default"},
            "delivery_id": message.delivery_id,
            "reminder_id": message.reminder_id,
        }
        headers = {
            "authorization": f"bearer {self.provider_token()}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-id": message.delivery_id,
            "apns-collapse-id": collapse_id(message.idempotency_key),
        }
        try:
            response = self.client.post(
                f"{self.base_url}/3/device/{device_token}",
                content=json.dumps(payload).encode(),
                headers=headers,
            )
        except httpx.HTTPError:
            return ProviderOutcome(ok=False, retryable=True, code="apns_unreachable")
        if response.status_code == 200:
            return ProviderOutcome(ok=True, message_id=response.headers.get("apns-id", ""))
        reason = ""
        with contextlib.suppress(ValueError):
            reason = str(response.json().get("reason", ""))[:40]
        if response.status_code == 410 or reason in {"BadDeviceToken", "Unregistered"}:
            return ProviderOutcome(ok=False, unregistered=True, code="apns_unregistered")
        if response.status_code in (429, 500, 503) or (
            response.status_code == 403 and (reason == "ExpiredProviderToken")
        ):
            if reason == "ExpiredProviderToken":
                self._jwt = ""
            return ProviderOutcome(ok=False, retryable=True, code=f"apns_{response.status_code}")
        return ProviderOutcome(ok=False, code=f"apns_{response.status_code}_{reason}"[:64])


class _FCMNoSleep(FCMNotification):
    """pyfcm, but a Retry-After answer is an error for the outbox to retry, not a sleep here."""

    def send_request(self, payload: Any = None, timeout: Any = None) -> requests.Response:
        response: requests.Response = self.requests_session.post(
            self.fcm_end_point, data=payload, timeout=timeout
        )
        if response.status_code == 429 or "Retry-After" in response.headers:
            raise fcm_errors.FCMServerError("throttled")
        if self._is_access_token_expired(response):
            self.thread_local.token_expiry = 0
        return response


class FcmClient:
    """Firebase Cloud Messaging HTTP v1 through pyfcm."""

    def __init__(
        self, *, service_account_file: str, project_id: str, timeout: float = 10.0
    ) -> None:
        self.timeout = timeout
        # No urllib3-level retries: the outbox retries with backoff across workers.
        self.fcm = _FCMNoSleep(
            service_account_file=service_account_file,
            project_id=project_id or None,
            adapter=HTTPAdapter(max_retries=0),
        )

    def send(self, *, device_token: str, message: OutgoingMessage) -> ProviderOutcome:
        try:
            result = self.fcm.notify(
                fcm_token=device_token,
                notification_title=message.title,
                notification_body=message.body,
                data_payload={
                    "delivery_id": message.delivery_id,
                    "reminder_id": message.reminder_id,
                },
                android_config={"collapse_key": collapse_id(message.idempotency_key)},
                timeout=self.timeout,
            )
        except fcm_errors.FCMNotRegisteredError:
            return ProviderOutcome(ok=False, unregistered=True, code="fcm_unregistered")
        except fcm_errors.FCMServerError:
            return ProviderOutcome(ok=False, retryable=True, code="fcm_unavailable")
        except (requests.ConnectionError, requests.Timeout):
            return ProviderOutcome(ok=False, retryable=True, code="fcm_unreachable")
        except fcm_errors.AuthenticationError:
            return ProviderOutcome(ok=False, retryable=True, code="fcm_auth")
        except fcm_errors.InvalidDataError as exc:
            # pyfcm wraps a failed OAuth token refresh (network) in InvalidDataError too.
            retryable = (
                isinstance(exc.__context__, Exception)
                and "refresh" in repr(exc.__context__).lower()
            )
            return ProviderOutcome(ok=False, retryable=retryable, code="fcm_invalid")
        except fcm_errors.FCMError:
            return ProviderOutcome(ok=False, code="fcm_error")
        return ProviderOutcome(ok=True, message_id=str(result.get("name", ""))[:200])


def apns_client_from_settings() -> ApnsClient | None:
    if not (
        settings.ENGAGEMENT_APNS_KEY_FILE
        and settings.ENGAGEMENT_APNS_KEY_ID
        and settings.ENGAGEMENT_APNS_TEAM_ID
        and settings.ENGAGEMENT_APNS_TOPIC
    ):
        return None
    return ApnsClient(
        key_pem=Path(settings.ENGAGEMENT_APNS_KEY_FILE).read_text(),
        key_id=settings.ENGAGEMENT_APNS_KEY_ID,
        team_id=settings.ENGAGEMENT_APNS_TEAM_ID,
        topic=settings.ENGAGEMENT_APNS_TOPIC,
        use_sandbox=settings.ENGAGEMENT_APNS_USE_SANDBOX,
        timeout=settings.ENGAGEMENT_PUSH_TIMEOUT_SECONDS,
    )


def fcm_client_from_settings() -> FcmClient | None:
    if not settings.ENGAGEMENT_FCM_SERVICE_ACCOUNT_FILE:
        return None
    return FcmClient(
        service_account_file=settings.ENGAGEMENT_FCM_SERVICE_ACCOUNT_FILE,
        project_id=settings.ENGAGEMENT_FCM_PROJECT_ID,
        timeout=settings.ENGAGEMENT_PUSH_TIMEOUT_SECONDS,
    )


class PushChannel:
    """Sends to every active device of the patient on a configured platform."""

    def __init__(
        self,
        *,
        apns: ApnsClient | None = None,
        fcm: FcmClient | None = None,
        configure: bool = True,
    ) -> None:
        self.clients: dict[str, ApnsClient | FcmClient] = {}
        apns = apns or (apns_client_from_settings() if configure else None)
        fcm = fcm or (fcm_client_from_settings() if configure else None)
        if apns is not None:
            self.clients[Device.Platform.APNS] = apns
        if fcm is not None:
            self.clients[Device.Platform.FCM] = fcm

    def available_for(self, *, patient_ids: list[str]) -> set[str]:
        if not self.clients:
            return set()
        devices = Device.objects.filter(
            patient_id__in=patient_ids, disabled_at__isnull=True, platform__in=list(self.clients)
        )
        return {str(pk) for pk in devices.values_list("patient_id", flat=True)}

    def send(self, message: OutgoingMessage) -> SendResult:
        devices = list(
            Device.objects.filter(
                patient_id=message.patient_id,
                disabled_at__isnull=True,
                platform__in=list(self.clients),
            ).order_by("registered_at")
        )
        if not devices:
            raise TerminalSendError("no_device")
        accepted: list[str] = []
        retry_codes: list[str] = []
        terminal_codes: list[str] = []
        for device in devices:
            outcome = self.clients[device.platform].send(device_token=device.token, message=message)
            if outcome.ok:
                accepted.append(outcome.message_id)
            elif outcome.unregistered:
                Device.objects.filter(pk=device.pk, disabled_at__isnull=True).update(
                    disabled_at=timezone.now()
                )
                terminal_codes.append(outcome.code)
            elif outcome.retryable:
                retry_codes.append(outcome.code)
            else:
                terminal_codes.append(outcome.code)
        if accepted:
            # Some device has it: never resend to the others (that would duplicate).
            return SendResult(delivered=False, provider_message_id=accepted[0])
        if retry_codes:
            raise RetryableSendError(retry_codes[0])
        raise TerminalSendError(terminal_codes[0] if terminal_codes else "push_failed")
