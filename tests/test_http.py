"""The shared policy: settings, redaction, https-only, retry bounds and Retry-After."""

from __future__ import annotations

import logging

import pytest
import tenacity
from conftest import REPO

from connector.config.mappings import load_mappings
from connector.http import (
    ApiError,
    CallLog,
    RedactingFilter,
    Retryable,
    RetryPolicy,
    SettingsError,
    checked_url,
    redact,
    setting,
)
from connector.sources import registry
from connector.sources.base import SourceSetup
from connector.webhook import WebhookSender
from sandbox.server import (
    HUBSPOT_TOKEN,
    PASSWORD,
    SECURITY_TOKEN,
    STRIPE_KEY,
    USERNAME,
    ZENDESK_TOKEN,
)


def test_secrets_from_env_or_file_are_redacted_everywhere(tmp_path, caplog):
    path = tmp_path / "secret"
    path.write_text("sk_live_from_file\n")
    assert redact("auth sk_live_from_file and tok-123456") == "auth sk_live_from_file and tok-123456"  # none yet
    assert setting({"X_FILE": str(path)}, "X", secret=True) == "sk_live_from_file"
    assert setting({"Y": " tok-123456 "}, "Y", secret=True) == "tok-123456"
    assert redact("auth sk_live_from_file and tok-123456") == "auth *** and ***"
    logger = logging.getLogger("healthsync.test")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="healthsync.test"):
        logger.info("calling with %s", "sk_live_from_file")
    assert "sk_live_from_file" not in caplog.text and "***" in caplog.text
    error = ApiError("stripe", "GET /v1/customers", "key tok-123456 refused", 401)
    assert "tok-123456" not in str(error)


SANDBOX_SECRETS = {"SALESFORCE_PASSWORD": PASSWORD, "SALESFORCE_SECURITY_TOKEN": SECURITY_TOKEN,
                   "HUBSPOT_ACCESS_TOKEN": HUBSPOT_TOKEN, "STRIPE_API_KEY": STRIPE_KEY, "ZENDESK_API_TOKEN": ZENDESK_TOKEN,
                   "USAGE_DATABASE_URL": "postgresql+psycopg://reader:usage-pass-4242@127.0.0.1:9/product"}


@pytest.mark.parametrize("from_files", [False, True], ids=["env", "files"])
def test_every_credential_a_source_reads_is_registered_by_the_source(tmp_path, from_files):
    """The sandbox's credentials, which every in-process sandbox test registers too: the registry
    starts empty in each test (conftest), so only the reads made here can hide them."""
    assert [redact(v) for v in SANDBOX_SECRETS.values()] == list(SANDBOX_SECRETS.values())  # none registered yet
    local = "http://127.0.0.1:9"
    env = {"SALESFORCE_USERNAME": USERNAME, "SALESFORCE_LOGIN_URL": local, "HUBSPOT_BASE_URL": local,
           "STRIPE_API_BASE": local, "ZENDESK_URL": local, "ZENDESK_EMAIL": USERNAME,
           "SLACK_URL": "https://hooks.slack.com/services/T0SANDBOX/B0SANDBOX/sandboxHookSecret"}
    for name, value in SANDBOX_SECRETS.items():
        if from_files:
            (tmp_path / name).write_text(value + "\n")
            env[f"{name}_FILE"] = str(tmp_path / name)
        else:
            env[name] = value
    ctx = SourceSetup(env, CallLog(), RetryPolicy(), load_mappings(REPO / "mappings"))  # usage: the mappings' URLs
    assert all(cls.from_env(ctx) is not None for cls in (p.client for p in registry.plugins()))
    assert WebhookSender(env, CallLog(), RetryPolicy()).url("SLACK_URL")
    line = " ".join([*SANDBOX_SECRETS.values(), "/services/T0SANDBOX/B0SANDBOX/sandboxHookSecret"])
    assert redact(line) == " ".join(["***"] * 7)
    assert redact("password authentication failed: usage-pass-4242") == "password authentication failed: ***"


def test_a_missing_secret_file_is_named():
    with pytest.raises(SettingsError, match="X_FILE=/nope: cannot read"):
        setting({"X_FILE": "/nope"}, "X", secret=True)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost", "https://api.example.com/"])
def test_https_or_localhost_only_accepts(url):
    assert checked_url("BASE", url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://api.example.com", "ftp://x.com", "not a url"])
def test_https_or_localhost_only_refuses(url):
    with pytest.raises(SettingsError):
        checked_url("BASE", url)


def test_retries_are_bounded_in_attempts_and_counted():
    calls = CallLog()
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        raise Retryable("HTTP 503", kind="5xx")

    with pytest.raises(ApiError, match="still failing after 4 attempts"):
        RetryPolicy(attempts=4, base=0.0001).call("zendesk", "GET x", flaky, lambda e: None, calls)
    assert len(attempts) == 4 and calls.retries[("zendesk", "5xx")] == 3


def test_only_transient_failures_are_retried():
    attempts = []

    def refused() -> None:
        attempts.append(1)
        raise ValueError("400 bad request")

    with pytest.raises(ApiError, match="bad request"):
        RetryPolicy(base=0.0001).call("x", "GET y", refused, lambda e: ApiError("x", "GET y", str(e), 400))
    assert len(attempts) == 1


def test_the_wait_honours_retry_after_and_caps_it():
    policy = RetryPolicy(base=0.001, max_retry_after=30)

    def state(exc: BaseException, attempt: int = 1) -> tenacity.RetryCallState:
        s = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        s.attempt_number = attempt
        s.set_exception((type(exc), exc, None))
        return s

    assert policy.wait(state(Retryable("429", retry_after=7))) == 7
    assert policy.wait(state(Retryable("429", retry_after=600))) == 30
    assert 0 <= policy.wait(state(Retryable("503"), attempt=3)) <= 0.004
