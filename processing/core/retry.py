# SPDX-License-Identifier: GPL-2.0-or-later
"""Retry policy for portal and webhook requests (pure: no network here)."""

from __future__ import annotations

import email.utils
import random
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

RETRY_STATUS = frozenset({202, 429, 500, 502, 503, 504})
SECRET_PARAMS = frozenset({"token", "app_token", "$$app_token", "api_key", "apikey", "key", "access_token",
                           "password", "secret"})


def should_retry(status: int | None) -> bool:
    """Connection errors and timeouts (status None), 429, 5xx gateway errors and Socrata's 202 are retried;
    other 4xx never are (a retry would hide a defect)."""
    return status is None or status in RETRY_STATUS


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, retry_after: str | None = None, base: float = 1.0, cap: float = 60.0,
                  rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter (base * 2^attempt, scaled by 0.5-1.5), honouring Retry-After."""
    honoured = retry_after_seconds(retry_after)
    if honoured is not None:
        return min(honoured, cap * 5)
    rng = rng or random.Random()
    return min(cap, base * (2 ** attempt)) * (0.5 + rng.random())


def redact_url(url: str) -> str:
    """The URL with secret query parameters replaced by '***' (for logs and error messages)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="$*:,()'")))
