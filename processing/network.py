# SPDX-License-Identifier: GPL-2.0-or-later
"""All network access of civic311: a requests session set up from QGIS's proxy settings, explicit timeouts,
retries with backoff and jitter, Cancel between attempts, and no secret ever in a log line or an exception."""

from __future__ import annotations

import json
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from qgis.core import Qgis, QgsProcessingException, QgsSettings

from .core.retry import backoff_delay, redact_url, should_retry

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    import requests

DEFAULT_TIMEOUT = (10.0, 120.0)  # connect, read (seconds); NYC 311 pages can take a minute to start
LOOPBACK = "127.0.0.1,localhost,::1"


def plugin_version() -> str:
    from pathlib import Path

    for line in (Path(__file__).resolve().parents[1] / "metadata.txt").read_text().splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    return "0"


def user_agent() -> str:
    v = Qgis.QGIS_VERSION_INT  # the version name (e.g. "Białowieża") is not valid in an HTTP header
    qgis = f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return f"civic311/{plugin_version()} (QGIS {qgis}; +https://github.com/civic311/civic311)"


def qgis_proxies() -> dict[str, str]:
    """requests' proxies dict from QGIS's Options > Network settings (empty: requests uses the environment)."""
    import requests

    s = QgsSettings()
    if str(s.value("proxy/proxyEnabled", False)).lower() not in ("true", "1"):
        return {"no_proxy": LOOPBACK}
    kind = str(s.value("proxy/proxyType", "DefaultProxy"))
    host, port = str(s.value("proxy/proxyHost", "")), str(s.value("proxy/proxyPort", ""))
    if kind == "DefaultProxy" or not host:
        return {"no_proxy": LOOPBACK}
    user, password = str(s.value("proxy/proxyUser", "")), str(s.value("proxy/proxyPassword", ""))
    cred = f"{requests.utils.quote(user)}:{requests.utils.quote(password)}@" if user else ""
    scheme = "socks5h" if kind.startswith("Socks") else "http"
    url = f"{scheme}://{cred}{host}{':' + port if port and port != '0' else ''}"
    excluded = s.value("proxy/noProxyUrls", []) or []
    if isinstance(excluded, str):
        excluded = [excluded]
    hosts = [urlsplit(u).hostname or u for u in excluded if u]
    return {"http": url, "https": url, "no_proxy": ",".join([LOOPBACK] + hosts)}


def make_session(headers: dict[str, str] | None = None) -> requests.Session:
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = user_agent()
    session.headers["Accept-Encoding"] = "gzip, deflate"
    if headers:
        session.headers.update(headers)
    session.proxies.update(qgis_proxies())
    return session


class NetworkError(QgsProcessingException):
    """A request failed for good; the message names the (redacted) URL and the server's own words."""


def _server_message(response: requests.Response) -> str:
    text = response.text[:500]
    try:
        body = response.json()
    except ValueError:
        return text.strip()
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        code = body.get("errorCode") or body.get("code")
        message = body.get("message") or body.get("description")
        if code and message:
            return f"{code}: {message}"
        if code or message:
            return str(code or message)
    if isinstance(body, list) and body and isinstance(body[0], dict) and body[0].get("description"):
        return str(body[0]["description"])
    return text.strip()


def request(session: requests.Session, method: str, url: str, feedback=None, *, params=None, json_body=None,
            timeout=DEFAULT_TIMEOUT, retries: int = 5, backoff_base: float = 1.0, backoff_cap: float = 60.0,
            secrets: tuple[str, ...] = (), rng: random.Random | None = None) -> requests.Response:
    """One HTTP exchange with retries on connection errors, timeouts, 429, 5xx and 202; others raise at once."""
    import requests
    import urllib3

    rng = rng or random.Random()
    last_problem = ""
    for attempt in range(retries + 1):
        if feedback is not None and feedback.isCanceled():
            raise NetworkError("Cancelled.")
        status, retry_after = None, None
        try:
            response = session.request(method, url, params=params, json=json_body, timeout=timeout, stream=True)
            status = response.status_code
            read_body(response)
            if status < 400 and status != 202:
                return response
            retry_after = response.headers.get("Retry-After")
            last_problem = f"HTTP {status}: {_server_message(response)}"
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as err:
            last_problem = f"{type(err).__name__}: {err}"
        except (UnicodeError, ValueError) as err:  # a malformed URL or header: retrying cannot help
            raise NetworkError(f"{method} {_scrub(redact_url(url), secrets)} is not a valid request: "
                               f"{_scrub(str(err), secrets)}") from None
        last_problem = _scrub(last_problem, secrets)
        if not should_retry(status) or attempt == retries:
            break
        delay = backoff_delay(attempt, retry_after, backoff_base, backoff_cap, rng)
        if feedback is not None:
            feedback.pushInfo(f"{last_problem[:200]} — retrying in {delay:.1f} s ({attempt + 1}/{retries})")
        _sleep(delay, feedback)
    raise NetworkError(f"{method} {_scrub(redact_url(url), secrets)} failed: {last_problem}")


def read_body(response: requests.Response) -> None:
    """Read a streamed response's body in one call and keep it as the response's content. requests would assemble
    it from 10 KiB pieces, which for a 50,000-row page is thousands of reads and a join. A body cut short or timed
    out raises urllib3's error, which the caller retries like any connection error."""
    body = response.raw.read(decode_content=True)
    response._content = body  # where requests keeps a body it has read itself
    response._content_consumed = True
    response.close()  # the body is read: the connection goes back to the pool


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _sleep(seconds: float, feedback) -> None:
    """Sleep in short slices so Cancel is honoured within a fraction of a second."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if feedback is not None and feedback.isCanceled():
            return
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))


def post_json(url: str, payload: Any, feedback=None, timeout=(5.0, 15.0), retries: int = 3) -> str | None:
    """POST a JSON document; returns None on success or the reason it could not be delivered."""
    session = make_session({"Content-Type": "application/json"})
    parts = urlsplit(url)
    # webhook URLs often carry their secret in the path (Slack, Teams): never echo it
    secrets = tuple(x for x in (parts.path.strip("/"), parts.query) if len(x) > 1)
    try:
        request(session, "POST", url, feedback, json_body=json.loads(json.dumps(payload, default=str)),
                timeout=timeout, retries=retries, backoff_base=0.5, backoff_cap=5.0, secrets=secrets)
        return None
    except NetworkError as err:
        return str(err)
    finally:
        session.close()
