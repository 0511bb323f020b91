# SPDX-License-Identifier: GPL-2.0-or-later
"""All network access of civic311: a requests session set up from QGIS's proxy settings, explicit timeouts,
retries with backoff and jitter, Cancel between attempts, and no secret ever in a log line or an exception."""

from __future__ import annotations

import http.client
import json
import random
import re
import time
import zlib
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from qgis.core import Qgis, QgsProcessingException, QgsSettings

from .core.retry import backoff_delay, redact_url, should_retry

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    import requests

DEFAULT_TIMEOUT = (10.0, 120.0)  # connect, read (seconds); NYC 311 pages can take a minute to start


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


def qgis_proxy_settings() -> tuple[dict[str, str], list[str]]:
    """(requests' proxies dict, QGIS's "no proxy" URL list) from Options > Network. An empty dict: no proxy is
    configured in QGIS, and requests may use the environment's."""
    import requests

    s = QgsSettings()
    if str(s.value("proxy/proxyEnabled", False)).lower() not in ("true", "1"):
        return {}, []
    kind = str(s.value("proxy/proxyType", "DefaultProxy"))
    host, port = str(s.value("proxy/proxyHost", "")), str(s.value("proxy/proxyPort", ""))
    if kind == "DefaultProxy" or not host:
        return {}, []
    user, password = str(s.value("proxy/proxyUser", "")), str(s.value("proxy/proxyPassword", ""))
    cred = f"{requests.utils.quote(user)}:{requests.utils.quote(password)}@" if user else ""
    scheme = "socks5h" if kind.startswith("Socks") else "http"
    url = f"{scheme}://{cred}{host}{':' + port if port and port != '0' else ''}"
    excluded = s.value("proxy/noProxyUrls", []) or []
    if isinstance(excluded, str):
        excluded = [excluded]
    return {"http": url, "https": url}, [str(u) for u in excluded if u]


def bypasses_proxy(url: str, excluded: list[str]) -> bool:
    """True for loopback hosts and for URLs QGIS's "no proxy" list excludes. QGIS compares each entry as a prefix
    of the URL; an entry that is a bare host (or a URL's host) also excludes that host and its sub-domains."""
    import ipaddress

    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    for entry in excluded:
        entry = entry.strip()
        if not entry:
            continue
        if url.startswith(entry):
            return True
        name = (urlsplit(entry).hostname if "://" in entry else entry.split("/")[0].split(":")[0]) or ""
        name = name.lower().lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def make_session(headers: dict[str, str] | None = None, secret_headers: tuple[str, ...] = (),
                 secrets: tuple[str, ...] = ()) -> requests.Session:
    """A requests session from QGIS's proxy settings. ``secret_headers`` (names) and ``secrets`` (values) are
    dropped from any request that a redirect sends to another host."""
    import requests

    proxies, excluded = qgis_proxy_settings()

    class Session(requests.Session):
        def rebuild_auth(self, prepared_request, response):  # called by requests on every redirect
            super().rebuild_auth(prepared_request, response)
            if self.should_strip_auth(response.request.url, prepared_request.url):
                for name in ("Authorization", *secret_headers):
                    prepared_request.headers.pop(name, None)
                prepared_request.url = strip_secret_params(prepared_request.url, secrets)

        def rebuild_proxies(self, prepared_request, proxies):  # a redirect may lead to an excluded host
            if self.civic311_proxies and bypasses_proxy(prepared_request.url, self.civic311_excluded):
                return {}
            return super().rebuild_proxies(prepared_request, proxies)

    session = Session()
    session.civic311_proxies, session.civic311_excluded = proxies, excluded  # type: ignore[attr-defined]
    session.headers["User-Agent"] = user_agent()
    session.headers["Accept-Encoding"] = "gzip, deflate"
    if headers:
        session.headers.update(headers)
    if proxies:
        session.trust_env = False  # QGIS's own proxy settings rule, not the environment's
        session.proxies.update(proxies)
    return session


def proxies_for(session, url: str) -> dict | None:
    """Per-request proxies: none for loopback and for hosts on QGIS's exclusion list (None: the session's)."""
    if bypasses_proxy(url, getattr(session, "civic311_excluded", [])):
        return {"http": None, "https": None, "all": None}  # None removes a proxy for this request
    return None


def strip_secret_params(url: str, secrets: tuple[str, ...]) -> str:
    """The URL without query parameters that are secret by name or carry a secret value."""
    from urllib.parse import parse_qsl, urlencode, urlunsplit

    from .core.retry import SECRET_PARAMS

    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in SECRET_PARAMS and not any(s and s in v for s in secrets)]
    netloc = parts.netloc.rsplit("@", 1)[-1]  # userinfo never follows a redirect to another host
    return urlunsplit(parts._replace(query=urlencode(kept), netloc=netloc))


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


MAX_BODY_BYTES = 512 * 1024 * 1024  # one decoded response (a page) at most; a larger one is refused


class BodyTooLargeError(NetworkError):
    """A response decodes to more than the cap (a gzip bomb, or a page far larger than asked for)."""


class DeadlineError(Exception):
    """A response took longer than its whole-exchange deadline (a server that drips bytes)."""


def request(session: requests.Session, method: str, url: str, feedback=None, *, params=None, json_body=None,
            timeout=DEFAULT_TIMEOUT, retries: int = 5, backoff_base: float = 1.0, backoff_cap: float = 60.0,
            secrets: tuple[str, ...] = (), rng: random.Random | None = None, deadline: float | None = None,
            max_bytes: int | None = None, check: Callable[[Any], str | None] | None = None) -> requests.Response:
    """One HTTP exchange with retries on connection errors, timeouts, bodies cut short, 429, 5xx and 202; others
    raise at once. ``deadline`` (seconds, default the read timeout) bounds each attempt from the request to the
    last byte of the body, so a server that drips bytes cannot outrun it; Cancel is checked while a body is read.
    ``check(response)`` may name a problem in a successful answer that a retry may cure (a body that is not
    JSON, an error inside an HTTP-200 body): it is retried like a 5xx."""
    import requests
    import urllib3

    rng = rng or random.Random()
    max_bytes = max_bytes or MAX_BODY_BYTES
    last_problem = ""
    read_timeout = timeout[1] if isinstance(timeout, tuple) else timeout
    limit = deadline if deadline is not None else read_timeout
    for attempt in range(retries + 1):
        if feedback is not None and feedback.isCanceled():
            raise NetworkError("Cancelled.")
        status, retry_after = None, None
        try:
            started = time.monotonic()
            response = session.request(method, url, params=params, json=json_body, timeout=timeout, stream=True,
                                       proxies=proxies_for(session, url))
            read_body(response, max_bytes, started + limit if limit else None, feedback)
            status = response.status_code  # only once the whole body arrived: a cut body is retried
            if status < 400 and status != 202:
                last_problem = (check(response) if check is not None else None) or ""
                if not last_problem:
                    return response
                status = None  # a problem in a successful answer: retried like a connection error
            else:
                retry_after = response.headers.get("Retry-After")
                last_problem = f"HTTP {status}: {_server_message(response)}"
        except BodyTooLargeError as err:
            raise NetworkError(f"{method} {scrub(redact_url(url), secrets)}: {err}") from None
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, DeadlineError,
                http.client.HTTPException, OSError) as err:
            if feedback is not None and feedback.isCanceled():
                raise NetworkError("Cancelled.") from None
            last_problem = f"{type(err).__name__}: {err}"
        except (UnicodeError, ValueError) as err:  # a malformed URL or header: retrying cannot help
            raise NetworkError(f"{method} {scrub(redact_url(url), secrets)} is not a valid request: "
                               f"{scrub(str(err), secrets)}") from None
        last_problem = scrub(last_problem, secrets)
        if not should_retry(status) or attempt == retries:
            break
        delay = backoff_delay(attempt, retry_after, backoff_base, backoff_cap, rng)
        if feedback is not None:
            feedback.pushInfo(f"{last_problem[:200]} — retrying in {delay:.1f} s ({attempt + 1}/{retries})")
        pause(delay, feedback)
    raise NetworkError(f"{method} {scrub(redact_url(url), secrets)} failed: {last_problem}")


def _decoder(encoding: str):
    """A zlib decompressor for a Content-Encoding (None for identity)."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return "deflate"  # zlib-wrapped or raw: decided on the first bytes
    return None


def read_body(response: requests.Response, max_bytes: int | None = None, deadline: float | None = None,
              feedback=None) -> None:
    """Read a streamed response's body and keep it as the response's content, decoding gzip/deflate here with a
    cap on the decoded size. Reads return as soon as data arrives (``read1``), so the whole-exchange ``deadline``
    and Cancel are checked between them. A body cut short raises http.client.IncompleteRead (retried)."""
    max_bytes = max_bytes or MAX_BODY_BYTES
    fp = getattr(response.raw, "_fp", None)  # the http.client response under urllib3: read1 does not wait
    reader = getattr(fp, "read1", None)
    decoder = _decoder(response.headers.get("Content-Encoding", ""))
    parts: list[bytes] = []
    size = 0
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineError("the response took longer than the time limit (TIMEOUT)")
            if feedback is not None and feedback.isCanceled():
                raise DeadlineError("cancelled while reading the response")
            chunk = reader(1 << 20) if reader is not None else response.raw.read(1 << 20, decode_content=False)
            if not chunk:
                break
            if decoder == "deflate":
                decoder = zlib.decompressobj(zlib.MAX_WBITS if (chunk[0] & 0x0F) == 8 else -zlib.MAX_WBITS)
            if decoder is not None:
                chunk = decoder.decompress(chunk, max_bytes + 1 - size)
                if decoder.unconsumed_tail:
                    size = max_bytes + 1
            size += len(chunk)
            if size > max_bytes:
                raise BodyTooLargeError(f"the response decodes to more than {max_bytes // (1024 * 1024)} MiB, "
                                        "the cap for one page: ask for smaller pages (PAGE_SIZE)")
            parts.append(chunk)
        if reader is not None and getattr(fp, "length", None):  # the server closed before Content-Length
            raise http.client.IncompleteRead(b"", fp.length)
        if decoder is not None and decoder != "deflate":
            tail = decoder.flush()
            size += len(tail)
            if size > max_bytes:
                raise BodyTooLargeError(f"the response decodes to more than {max_bytes // (1024 * 1024)} MiB")
            parts.append(tail)
    except BaseException:
        response.close()
        raise
    response._content = parts[0] if len(parts) == 1 else b"".join(parts)  # where requests keeps a read body
    response._content_consumed = True
    try:
        response.raw.release_conn()  # the body is read: the connection goes back to the pool
    except Exception:  # noqa: BLE001 - a connection that cannot be reused is simply closed
        response.close()


def secret_forms(secret: str) -> list[str]:
    """Every form a secret can take in a message: as is, percent-encoded (either way of encoding spaces and '/'),
    with lower-case escapes, and base64 (HTTP Basic)."""
    import base64
    from urllib.parse import quote, quote_plus

    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, safe="/")}
    forms |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in list(forms)}
    forms.add(base64.b64encode(secret.encode()).decode())
    return sorted((f for f in forms if f), key=len, reverse=True)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every form of every secret replaced by ***."""
    for secret in secrets:
        if secret:
            for form in secret_forms(secret):
                text = text.replace(form, "***")
    return text


def pause(seconds: float, feedback) -> None:
    """Sleep in short slices so Cancel is honoured within a fraction of a second."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if feedback is not None and feedback.isCanceled():
            return
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))


def webhook_secrets(url: str) -> tuple[str, ...]:
    """The parts of a webhook URL that are secret: user info, the path (Slack and Teams keep the key there), the
    query and each query value."""
    from urllib.parse import parse_qsl

    parts = urlsplit(url)
    values = [parts.path.strip("/"), parts.query, parts.username or "", parts.password or ""]
    values += [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]
    values += [seg for seg in parts.path.split("/") if len(seg) > 3]
    return tuple(sorted({v for v in values if len(v) > 1}, key=len, reverse=True))


def safe_url(url: str) -> str:
    """scheme://host[:port]/… : a URL as it may appear in a log, a message or metadata."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}/…" if parts.scheme else "…"


def post_json(url: str, payload: Any, feedback=None, timeout=(5.0, 15.0), retries: int = 3) -> str | None:
    """POST a JSON document; returns None on success or the reason it could not be delivered (without any secret
    part of the URL)."""
    secrets = webhook_secrets(url)
    session = make_session({"Content-Type": "application/json"}, secrets=secrets)
    try:
        request(session, "POST", url, feedback, json_body=json.loads(json.dumps(payload, default=str)),
                timeout=timeout, retries=retries, backoff_base=0.5, backoff_cap=5.0, secrets=secrets)
        return None
    except NetworkError as err:
        return scrub(str(err).replace(url, safe_url(url)), secrets)
    finally:
        session.close()
