"""Alert delivery: a log line always, plus a JSON POST to a webhook when one is configured."""

from __future__ import annotations

import logging

import requests

from levibot_pipelines.adapters.redact import redact_text, redact_url

log = logging.getLogger(__name__)


def post_alert(webhook_url: str | None, payload: dict, timeout_s: float = 5.0) -> bool:
    """POST ``payload`` as JSON to ``webhook_url``; returns whether it was delivered.

    A failing webhook is logged, never raised: an unreachable alert channel must not stop the
    sensor that watches the data. The URL may carry a token: the log shows it redacted.
    """
    level = logging.WARNING if payload.get("state") in ("WARN", "FAIL") else logging.INFO
    log.log(level, "alert: %s", payload.get("message", payload))
    if not webhook_url:
        return False
    try:
        response = requests.post(webhook_url, json=payload, timeout=timeout_s)
        response.raise_for_status()
    except requests.RequestException as exc:
        shown = redact_url(webhook_url)
        log.error("alert webhook %s failed: %s", shown, redact_text(str(exc), webhook_url))
        return False
    return True
