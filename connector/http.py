"""What every API client shares: settings and secrets, redaction, call counting, retries.

Each system module (connector/systems/) owns the facts of its API; this module
owns the policy they all follow:

* settings come from env vars or ``NAME_FILE`` secret files; every secret read
  is registered with the redactor, and every error or log line passes through it;
* plain http is refused except to localhost;
* one retry loop (tenacity) per API family: 429, 5xx, concurrency limits
  (Salesforce's ConcurrentPerOrgLongTxn) and dropped connections are retried
  with exponential backoff and full jitter, never sooner than the API's own
  Retry-After, bounded in attempts and total time; anything else fails at
  once — a rejected credential as AuthError (exit 2), naming the variables;
* every HTTP request an SDK makes is counted per system and endpoint.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import tenacity
import urllib3

from .errors import HealthsyncError
from .shutdown import Shutdown

log = logging.getLogger("healthsync")
T = TypeVar("T")

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


# ------------------------------------------------------------------ errors


class SettingsError(HealthsyncError):
    """A setting (env var, secret file, URL) is missing or invalid."""

    exit_code = 2


class ApiError(HealthsyncError):
    """An API answered with an error that retrying cannot fix, or retries ran out."""

    def __init__(self, system: str, endpoint: str, message: str, status: int | None = None):
        self.system, self.endpoint, self.status = system, endpoint, status
        where = f"{system} {endpoint}" + (f" (HTTP {status})" if status else "")
        super().__init__(redact(f"{where}: {message}"))


class AuthError(ApiError):
    """The API rejected the credentials (401), or they lack the access healthsync needs (403).

    Exit code 2 (like a missing setting): nothing retries it away, an operator must fix the
    environment. The message names the system and the variables to check, never a secret.
    """

    exit_code = 2

    def __init__(self, system: str, endpoint: str, message: str, status: int | None = None,
                 variables: tuple[str, ...] = ()):
        self.variables = tuple(variables)
        check = f"; check {', '.join(self.variables)}" if self.variables else ""
        super().__init__(system, endpoint, f"credentials rejected: {message.rstrip().rstrip('.')}{check}", status)


class QuotaStop(HealthsyncError):
    """The API quota reserve is reached: the run stops cleanly, nothing half-done."""

    exit_code = 4

    def __init__(self, system: str, message: str):
        self.system = system
        super().__init__(redact(f"{system}: {message}"))


class Retryable(Exception):
    """A transient failure: worth another attempt after at least `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float | None = None, kind: str = "error"):
        super().__init__(message)
        self.retry_after = retry_after
        self.kind = kind


# ------------------------------------------------------------------ secrets


class _Redactor:
    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if len(secret) < 4:
            return  # too short to redact without mangling ordinary text
        with self._lock:
            self._secrets.add(secret)
            alternatives = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))

    def __call__(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub("***", text) if pattern else text

    def forget(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._pattern = None


redact = _Redactor()


def forget_secrets() -> None:
    """Unregister every secret, as in a fresh process (the tests start each test with none)."""
    redact.forget()


class RedactingFilter(logging.Filter):
    """Attached to healthsync's log handlers: no secret reaches a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def setting(env: Mapping[str, str], name: str, *, secret: bool = False) -> str | None:
    """NAME from the environment, or the contents of the file NAME_FILE names."""
    value = env.get(name)
    path = env.get(f"{name}_FILE")
    if value is None and path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE={path}: cannot read the secret file ({exc.strerror})") from None
    if value is not None:
        value = value.strip()
        if secret:
            redact.add(value)
    return value or None


def checked_url(name: str, url: str) -> str:
    """A base URL, refused when it is not https (plain http only to localhost)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}={url!r} is not an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
        raise SettingsError(
            f"{name}={url}: plain http is refused (credentials would travel unencrypted); "
            "use https, or http only to localhost"
        )
    return url.strip().rstrip("/")


def ca_bundle(env: Mapping[str, str]) -> str | bool:
    """Extra CA bundle to trust (the sandbox's throwaway CA), else the system default."""
    path = env.get("HEALTHSYNC_CA_BUNDLE")
    if not path:
        return True
    if not Path(path).is_file():
        raise SettingsError(f"HEALTHSYNC_CA_BUNDLE={path}: no such file")
    return path


# ------------------------------------------------------------------ counting


@dataclass
class CallLog:
    """HTTP requests made, per system and endpoint, including retried attempts."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: Counter[tuple[str, str]] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, system: str, endpoint: str) -> None:
        with self._lock:
            self.calls[(system, endpoint)] += 1

    def retried(self, system: str, kind: str) -> None:
        with self._lock:
            self.retries[(system, kind)] += 1

    def total(self, system: str | None = None) -> int:
        with self._lock:  # the systems' threads may be counting
            calls = list(self.calls.items())
        return sum(n for (s, _), n in calls if system in (None, s))

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            calls = sorted(self.calls.items())
        out: dict[str, dict[str, int]] = {}
        for (system, endpoint), n in calls:
            out.setdefault(system, {})[endpoint] = n
        return out


class Session(requests.Session):
    """A requests session whose own CA bundle wins over REQUESTS_CA_BUNDLE.

    requests lets the environment variable override `session.verify` unless a
    request passes `verify` itself; with HEALTHSYNC_CA_BUNDLE set, this one does.
    """

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if isinstance(self.verify, str):
            kwargs.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kwargs)


def counted_session(
    calls: CallLog, system: str, endpoint_of: Callable[[str, str], str], verify: str | bool = True
) -> requests.Session:
    """A requests session that counts each request it sends under `endpoint_of(method, url)`."""
    session = Session()
    session.verify = verify

    def count(response: requests.Response, *args: object, **kwargs: object) -> None:
        calls.count(system, endpoint_of(response.request.method or "GET", response.request.url or ""))

    session.hooks["response"].append(count)
    return session


# ------------------------------------------------------------------ retrying


@dataclass(frozen=True)
class RetryPolicy:
    """How one API family is retried: bounded in attempts and in total time."""

    attempts: int = 8
    total_seconds: float = 300.0
    base: float = 0.5  # first backoff, doubled each attempt, full jitter
    cap: float = 60.0  # longest single wait
    max_retry_after: float = 120.0  # a Retry-After longer than this is not waited out
    shutdown: Shutdown | None = field(default=None, compare=False)  # a stop request ends waits and new requests

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RetryPolicy:
        def num(name: str, default: float) -> float:
            raw = env.get(name)
            try:
                return float(raw) if raw else default
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a number") from None

        return cls(
            attempts=int(num("HEALTHSYNC_RETRY_ATTEMPTS", cls.attempts)),
            total_seconds=num("HEALTHSYNC_RETRY_SECONDS", cls.total_seconds),
            base=num("HEALTHSYNC_RETRY_BASE", cls.base),
        )

    def wait(self, retry_state: tenacity.RetryCallState) -> float:
        exponential = min(self.cap, self.base * 2 ** (retry_state.attempt_number - 1))
        jittered = random.uniform(0, exponential)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None) or 0.0
        return max(jittered, min(retry_after, self.max_retry_after))

    def pause(self, seconds: float) -> None:
        """Wait for a rate window; cut short by a stop request (the next request is then refused)."""
        if self.shutdown is not None:
            self.shutdown.sleep(seconds)
        else:
            time.sleep(seconds)

    def call(
        self,
        system: str,
        endpoint: str,
        fn: Callable[[], T],
        classify: Callable[[BaseException], BaseException | None],
        calls: CallLog | None = None,
    ) -> T:
        """Run fn; `classify` turns an exception into Retryable, a final error, or None (re-raise)."""

        def attempt() -> T:
            if self.shutdown is not None:
                self.shutdown.check(f"{system} {endpoint}")
            try:
                return fn()
            except Retryable:
                raise
            except Exception as exc:  # noqa: BLE001 - classify decides
                mapped = classify(exc)
                if mapped is None:
                    raise
                raise mapped from exc

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            kind = getattr(exc, "kind", "error")
            if calls is not None:
                calls.retried(system, kind)
            log.info(redact(f"{system} {endpoint}: {exc}; retry {state.attempt_number}"))

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Retryable),
            wait=self.wait,
            stop=tenacity.stop_after_attempt(self.attempts)
            | tenacity.stop_after_delay(self.total_seconds),
            before_sleep=before_sleep,
            sleep=self.shutdown.sleep if self.shutdown is not None else tenacity.nap.sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Retryable as exc:
            raise ApiError(
                system, endpoint, f"still failing after {self.attempts} attempts or "
                f"{self.total_seconds:g} s: {exc}"
            ) from exc


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (the HTTP-date form is rare on these APIs and ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def is_dropped(exc: BaseException) -> bool:
    """A connection closed or reset mid-request: the request may not have arrived."""
    dropped = (
        requests.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
        http.client.RemoteDisconnected,
        ConnectionResetError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.MaxRetryError,
        urllib3.exceptions.NewConnectionError,
    )
    return isinstance(exc, dropped)
