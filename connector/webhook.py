"""Webhooks: alert messages POSTed as JSON to a URL held in an environment variable.

Facts this module relies on:
* a webhook URL is a credential (a Slack incoming-webhook URL carries its token
  in the path): it is read with `setting(..., secret=True)`, so it is redacted
  from every log line and error, and it is named by its variable everywhere
  else (call counts, errors, the store);
* Slack answers 200 with the text `ok`; 4xx answers (invalid_payload,
  no_service, channel_is_archived...) do not get better by retrying, 429 and
  5xx do, and so does a dropped or timed-out connection;
* each request carries `X-Healthsync-Delivery: <delivery id>`, the same on
  every attempt, so a receiver can drop a duplicate (a retry after an answer
  that was lost).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from .http import (
    ApiError,
    CallLog,
    Retryable,
    RetryPolicy,
    Session,
    checked_url,
    is_dropped,
    redact,
    retry_after_seconds,
    setting,
)
from .outbox import CreateResult

SYSTEM = "webhook"
TIMEOUT = (10, 30)  # seconds to connect, to read the answer


class WebhookSender:
    """POSTs JSON bodies to the URLs named by environment variables, under the shared retry policy."""

    system = SYSTEM

    def __init__(self, env: Mapping[str, str], calls: CallLog, policy: RetryPolicy):
        self.env, self.calls, self.policy = env, calls, policy
        self.session = Session()

    def url(self, name: str) -> str | None:
        """The URL in variable `name` (or the file NAME_FILE names); None when it is not set."""
        url = setting(self.env, name, secret=True)
        if url is None:
            return None
        parts = urlsplit(url)
        if len(parts.path) >= 12:  # a URL's token may appear without its host, e.g. in a library's message
            redact.add(parts.path + (f"?{parts.query}" if parts.query else ""))
        return checked_url(name, url)

    def post(self, key: str, name: str, body: dict[str, Any]) -> CreateResult:
        """One delivery; retried on 429, 5xx and dropped connections; any other 4xx is final."""
        url = self.url(name)
        if url is None:
            return CreateResult(key, False, error=f"{name} is not set", transient=False)
        endpoint = f"POST {name}"

        def attempt() -> requests.Response:
            self.calls.count(SYSTEM, endpoint)
            return self.session.post(url, json=body, timeout=TIMEOUT,
                                     headers={"X-Healthsync-Delivery": key, "User-Agent": "healthsync"})

        def classify(exc: BaseException) -> BaseException | None:
            if is_dropped(exc) or isinstance(exc, requests.Timeout):
                return Retryable(f"connection failed ({type(exc).__name__})", kind="drop")
            if isinstance(exc, requests.RequestException):
                return ApiError(SYSTEM, endpoint, f"request failed ({type(exc).__name__})")
            return None

        def checked() -> requests.Response:
            response = attempt()
            if response.status_code == 429 or response.status_code >= 500:
                raise Retryable(f"HTTP {response.status_code} {_excerpt(response)}",
                                retry_after_seconds(response.headers.get("Retry-After")),
                                kind="429" if response.status_code == 429 else "5xx")
            return response

        try:
            response = self.policy.call(SYSTEM, endpoint, checked, classify, self.calls)
        except ApiError as exc:  # retries ran out, or the request could not be made
            return CreateResult(key, False, error=str(exc), transient=True)
        if 200 <= response.status_code < 300:
            return CreateResult(key, True)
        return CreateResult(key, False, error=redact(f"HTTP {response.status_code} {_excerpt(response)}".strip()))


def _excerpt(response: requests.Response) -> str:
    return redact(response.text[:200].strip())
