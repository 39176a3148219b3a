"""Redaction of secret-bearing URLs before they reach a log line, a printout or Dagster metadata.

The values treated as secrets: the alert webhook URL (LEVIBOT_ALERT_WEBHOOK, a Slack-style token
in its path), the Pushgateway URL (LEVIBOT_PUSHGATEWAY_URL), the MLflow tracking URI and UI base
(LEVIBOT_MLFLOW_TRACKING_URI, LEVIBOT_MLFLOW_UI: a database URI may carry a password) and the
exchange API URL (LEVIBOT_EXCHANGE_API_URL). Pure string work, no I/O; it lives in adapters only
because ``urllib`` is outside core's allowed standard library.

``redact_url`` keeps what locates a service (scheme, host, port, ordinary path) and replaces
what authenticates: userinfo, query and fragment parameter values, and, in HTTP(S) URLs, path
segments that look like tokens. ``redact_text`` cleans free text (an exception message) that
may quote a known secret URL or parts of it, and any URL it contains.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

REDACTED = "***"

# A path segment of >= 16 URL-safe characters is taken for a token (Slack's
# /services/T000/B000/<24 chars>, Discord's /api/webhooks/<id>/<68 chars>).
TOKEN_SEGMENT = re.compile(r"[A-Za-z0-9_\-]{16,}")
# Schemes whose path may hold a capability token; elsewhere (postgresql, sqlite, file) the path
# is a database name or a file and is kept.
_TOKEN_PATH_SCHEMES = frozenset({"http", "https", "ws", "wss"})
MIN_QUOTED_VALUE = 4  # query values shorter than this are not searched for in free text
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{}]+")


def _redact_params(params: str) -> str:
    """``a=1&b=2`` -> ``a=***&b=***``; an item without ``=`` is replaced whole."""
    items = []
    for item in params.split("&"):
        key, sep, _ = item.partition("=")
        items.append(f"{key}={REDACTED}" if sep else (REDACTED if item else item))
    return "&".join(items)


def _redact_path(path: str) -> str:
    return "/".join(REDACTED if TOKEN_SEGMENT.fullmatch(seg) else seg for seg in path.split("/"))


def redact_url(url: str | None) -> str | None:
    """``url`` with its credentials replaced by ``***``; ``None`` and ``""`` pass through.

    ``https://user:pw@host:8443/a?key=v#x`` -> ``https://***@host:8443/a?key=***#x``;
    ``https://hooks.slack.com/services/T000/B000/<24 chars>`` ->
    ``https://hooks.slack.com/services/T000/B000/***``;
    ``postgresql://u:pw@db:5432/mlflow`` -> ``postgresql://***@db:5432/mlflow``.
    A fragment is kept unless it holds ``key=value`` pairs (then their values are redacted).
    A value that cannot be parsed as a URL becomes ``***`` as a whole.
    """
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.scheme:  # not a URL: still hide token-like words
        return _redact_path(url)
    _, at, hostport = parts.netloc.rpartition("@")
    out = f"{parts.scheme}:"
    if url[len(parts.scheme) + 1 :].startswith("//"):
        out += f"//{REDACTED}@{hostport}" if at else f"//{hostport}"
    tokens_in_path = parts.scheme.lower() in _TOKEN_PATH_SCHEMES
    out += _redact_path(parts.path) if tokens_in_path else parts.path
    if parts.query:
        out += "?" + _redact_params(parts.query)
    if parts.fragment:
        out += "#" + (_redact_params(parts.fragment) if "=" in parts.fragment else parts.fragment)
    return out


def _secret_parts(url: str) -> list[tuple[str, str]]:
    """(quoted form, its redaction) pairs for the ways a message may quote ``url``: whole, as
    ``path?query`` (requests' ``with url: /services/...``), and its single secret pieces.
    Longest first, so a whole quote is replaced before its pieces."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [(url, REDACTED)]
    pairs = [(url, redact_url(url) or "")]
    if parts.query:
        tail = f"{parts.path}?{parts.query}"
        pairs.append((tail, redact_url(f"{parts.scheme}://h{tail}")[len(parts.scheme) + 4 :]))
    userinfo, at, _ = parts.netloc.rpartition("@")
    pieces = [userinfo, *userinfo.split(":")] if at else []
    if parts.scheme.lower() in _TOKEN_PATH_SCHEMES:
        pieces += [seg for seg in parts.path.split("/") if TOKEN_SEGMENT.fullmatch(seg)]
    for params in (parts.query, parts.fragment if "=" in parts.fragment else ""):
        values = (item.partition("=")[2] or item for item in params.split("&") if params)
        # a short value (``?x=1``) quoted alone is no secret, and replacing it would garble text
        pieces += [v for v in values if len(v) >= MIN_QUOTED_VALUE]
    pairs += [(p, REDACTED) for p in pieces if p]
    return sorted(set(pairs), key=lambda pair: len(pair[0]), reverse=True)


def redact_text(text: str, *secrets: str | None) -> str:
    """``text`` (e.g. an exception message) with every URL in it passed through ``redact_url``
    and every secret part of the known ``secrets`` URLs (which the text may quote in pieces,
    like requests' ``Max retries exceeded with url: /services/...``) replaced by ``***``."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)) or "", text)
    for secret in secrets:
        if secret:
            for quoted, redacted in _secret_parts(secret):
                text = text.replace(quoted, redacted)
    return text
