# SPDX-License-Identifier: GPL-2.0-or-later
"""Portal clients: how each 311 API is asked for one page, how its answer is read, and when to stop.

Pure: no network here. The fetch loop (``fetch_window``) takes an ``http(url, params, headers)`` function that
returns the decoded JSON body (raising on HTTP errors), and a page cache, so paging is tested without a server.
Paging never loses or repeats a row: a total order ending in a unique key, date windows instead of deep
offsets, and each API's end-of-data signal (short page, exceededTransferLimit, next_page, total).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

API_NAMES = ("Socrata SODA", "Open311 GeoReport v2", "SeeClickFix v2", "ArcGIS FeatureServer", "CKAN DataStore")
API_KEYS = ("socrata", "open311", "seeclickfix", "arcgis", "ckan")
DEFAULT_PAGE = {"socrata": 50_000, "open311": 500, "seeclickfix": 100, "arcgis": 2000, "ckan": 32_000}


class PortalError(Exception):
    """The portal answered with an error (its own message is in the text)."""


class PagingIgnoredError(Exception):
    """This window cannot be paged reliably (the server ignores paging, clamps, or its order has ties): fetch it
    again as two halves."""


def soql_quote(value: str) -> str:
    """A SoQL / SQL string literal: single quotes doubled, so a value cannot change the query."""
    return "'" + str(value).replace("'", "''") + "'"


IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def check_identifiers(api: str, names: dict[str, str | None]) -> None:
    """Field names that go into a server query (SoQL $where, ArcGIS where) must be plain identifiers: a name
    with quotes, spaces or parentheses could change the query. Raises ValueError naming the field."""
    for key, name in names.items():
        if name and not IDENTIFIER.fullmatch(name):
            raise ValueError(f"{name!r} ({key}) is not a plain field name, so it cannot be sent in a {api} query: "
                             "use the portal's API field name (letters, digits, underscores).")


def month_windows(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at calendar-month boundaries, so re-runs with a later end reuse the cached months."""
    out = []
    cur = start
    while cur < end:
        nxt = datetime(cur.year + (cur.month == 12), cur.month % 12 + 1, 1)
        out.append((cur, min(nxt, end)))
        cur = nxt
    return out


@dataclass
class Query:
    base_url: str
    dataset: str
    fields: dict[str, str]  # normalised key -> portal field (created_at, category, … for server-side filters)
    categories: list[str] = field(default_factory=list)
    bbox: tuple[float, float, float, float] | None = None  # lon/lat
    page_size: int = 0
    location_field: str | None = None
    token_param: str | None = None  # ArcGIS token / Open311 api_key (a query parameter); never logged
    tz: str | None = None  # IANA zone of the portal's local time: day boundaries are local midnights


def to_utc(moment: datetime, tz: str | None) -> datetime:
    """A naive local wall-clock time in ``tz`` as a naive UTC instant (unchanged when the zone is unknown)."""
    if not tz:
        return moment
    from datetime import timezone
    from zoneinfo import ZoneInfo

    return moment.replace(tzinfo=ZoneInfo(tz)).astimezone(timezone.utc).replace(tzinfo=None)


@dataclass
class PageState:
    index: int = 0  # pages fetched in this window
    rows: int = 0  # rows fetched in this window
    extra: dict = field(default_factory=dict)


class Client:
    key = ""
    # APIs with no unique sort order: page numbers over a window with ties lose and repeat rows, so windows are
    # split until each fits one page (fetch_window_fitting)
    fits_windows = False
    id_key = ""

    def __init__(self, query: Query):
        self.q = query
        self.page_size = query.page_size or DEFAULT_PAGE[self.key]
        self.page_cap: int | None = None  # the most rows the server returns per page, once learned

    def server_filters(self) -> dict[str, str | None]:
        """For each filter (dates, categories, area): how the server applies it, or None when it cannot."""
        return {"dates": "created-date window", "categories": None, "area": None}

    def transient_problem(self, body: Any) -> str | None:
        """The portal's message when a successful HTTP answer carries an error a retry may cure."""
        return None

    def window_total(self, state: PageState) -> int | None:
        """The number of rows the server says the window holds, when it says (SeeClickFix)."""
        return None

    def prepare(self, http) -> None:
        """One-off requests before paging (e.g. ArcGIS layer metadata)."""

    def windows(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        return month_windows(start, end)

    def request(self, window, state: PageState) -> tuple[str, dict]:
        raise NotImplementedError

    def parse(self, body: Any, state: PageState) -> tuple[list[dict], bool]:
        """Records of one page and whether more pages follow."""
        raise NotImplementedError

    def total_hint(self) -> int | None:
        return None


class Socrata(Client):
    key = "socrata"

    def __init__(self, query: Query):
        super().__init__(query)
        check_identifiers("SoQL", {"created_at": query.fields.get("created_at"),
                                   "category": query.fields.get("category"), "location": query.location_field})

    def server_filters(self):
        return {"dates": f"$where on {self.q.fields.get('created_at', 'created_date')}",
                "categories": f"$where on {self.q.fields['category']}" if self.q.fields.get("category") else None,
                "area": f"within_box({self.q.location_field})" if self.q.location_field else None}

    def request(self, window, state):
        created = self.q.fields.get("created_at", "created_date")
        fmt = "%Y-%m-%dT%H:%M:%S"  # floating timestamps: the portal's local wall-clock time, as the window
        where = [f"{created} >= {soql_quote(window[0].strftime(fmt))}",
                 f"{created} < {soql_quote(window[1].strftime(fmt))}"]
        if self.q.categories and self.q.fields.get("category"):
            where.append(f"{self.q.fields['category']} in ({', '.join(soql_quote(c) for c in self.q.categories)})")
        if self.q.bbox and self.q.location_field:
            w, s, e, n = self.q.bbox
            where.append(f"within_box({self.q.location_field}, {n}, {w}, {s}, {e})")
        params = {"$where": " AND ".join(where), "$order": f"{created},:id", "$limit": self.page_size,
                  "$offset": state.rows}
        return f"{self.q.base_url.rstrip('/')}/resource/{self.q.dataset}.json", params

    def parse(self, body, state):
        if isinstance(body, dict):
            code = body.get("errorCode") or body.get("code") or "error"
            raise PortalError(f"Socrata {code}: {body.get('message', body)}")
        if not isinstance(body, list):
            raise PortalError("Socrata answered with something that is not a list of rows.")
        return body, len(body) >= self.page_size


class Open311(Client):
    key = "open311"
    fits_windows = True
    id_key = "service_request_id"

    def request(self, window, state):
        # GeoReport v2 takes W3C instants: the local day boundaries as UTC
        params = {"start_date": to_utc(window[0], self.q.tz).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "end_date": to_utc(window[1], self.q.tz).strftime("%Y-%m-%dT%H:%M:%SZ"), "page": state.index + 1,
                  "page_size": self.page_size}
        if self.q.dataset:
            params["jurisdiction_id"] = self.q.dataset
        if self.q.token_param:
            params["api_key"] = self.q.token_param  # where the GeoReport v2 spec takes the key
        return f"{self.q.base_url.rstrip('/')}/requests.json", params

    def parse(self, body, state):
        if isinstance(body, dict):
            raise PortalError(f"Open311: {body.get('description') or body}")
        if not isinstance(body, list):
            raise PortalError("Open311 answered with something that is not a list of requests.")
        if body and isinstance(body[0], dict) and "code" in body[0] and "description" in body[0] and \
                "service_request_id" not in body[0]:
            raise PortalError(f"Open311 {body[0]['code']}: {body[0]['description']}")
        return body, len(body) > 0


class SeeClickFix(Client):
    key = "seeclickfix"
    fits_windows = True
    id_key = "id"

    def server_filters(self):
        return {"dates": "after/before", "categories": None, "area": "min_lat/max_lat/min_lng/max_lng"}

    def window_total(self, state):
        entries = state.extra.get("entries")
        return int(entries) if isinstance(entries, (int, float)) or str(entries).isdigit() else None

    def request(self, window, state):
        params = {"after": to_utc(window[0], self.q.tz).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "before": to_utc(window[1], self.q.tz).strftime("%Y-%m-%dT%H:%M:%SZ"), "sort": "created_at",
                  "sort_direction": "ASC", "status": "open,acknowledged,closed,archived",
                  "per_page": min(self.page_size, 100), "page": state.index + 1}
        if self.q.bbox:
            w, s, e, n = self.q.bbox
            params.update({"min_lat": s, "min_lng": w, "max_lat": n, "max_lng": e})
        if self.q.dataset:
            params["place_url"] = self.q.dataset
        return f"{self.q.base_url.rstrip('/')}/issues", params

    def parse(self, body, state):
        if not isinstance(body, dict) or "issues" not in body:
            raise PortalError(f"SeeClickFix: {body.get('message') if isinstance(body, dict) else body}")
        pagination = (body.get("metadata") or {}).get("pagination") or {}
        state.extra["entries"] = pagination.get("entries")
        return body["issues"], bool(pagination.get("next_page")) and len(body["issues"]) > 0


class ArcGIS(Client):
    key = "arcgis"

    def __init__(self, query: Query):
        super().__init__(query)
        check_identifiers("ArcGIS", {"created_at": query.fields.get("created_at"),
                                     "category": query.fields.get("category")})

    def layer_url(self):
        ds = self.q.dataset.strip()
        if ds.startswith("http"):
            return ds.rstrip("/")
        return f"{self.q.base_url.rstrip('/')}/{ds.lstrip('/')}".rstrip("/")

    def server_filters(self):
        return {"dates": f"where on {self.q.fields.get('created_at', 'CreatedDate')}",
                "categories": f"where on {self.q.fields['category']}" if self.q.fields.get("category") else None,
                "area": "envelope geometry"}

    def transient_problem(self, body):
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return None
        code = err.get("code")
        message = f"{err.get('message')} {err.get('details') or ''}".strip()
        server_side = str(code).strip().isdigit() and 500 <= int(str(code).strip()) < 600
        if server_side or "error performing query operation" in message.lower():
            return f"ArcGIS {code}: {message}"
        return None

    def prepare(self, http):
        params = {"f": "json"}
        if self.q.token_param:
            params["token"] = self.q.token_param
        meta = http(self.layer_url(), params)
        if isinstance(meta, dict) and "error" in meta:
            raise PortalError(f"ArcGIS {meta['error'].get('code')}: {meta['error'].get('message')}")
        self.max_records = int(meta.get("maxRecordCount") or 1000)
        self.oid = meta.get("objectIdField") or next(
            (f["name"] for f in meta.get("fields", []) if f.get("type") == "esriFieldTypeOID"), "OBJECTID")
        adv = meta.get("advancedQueryCapabilities") or {}
        self.paging = bool(adv.get("supportsPagination", meta.get("supportsPagination", True)))
        self.page_size = min(self.page_size, self.max_records)

    def request(self, window, state):
        created = self.q.fields.get("created_at", "CreatedDate")
        fmt = "%Y-%m-%d %H:%M:%S"  # ArcGIS date fields hold UTC: the local day boundaries as UTC
        where = [f"{created} >= TIMESTAMP '{to_utc(window[0], self.q.tz).strftime(fmt)}'",
                 f"{created} < TIMESTAMP '{to_utc(window[1], self.q.tz).strftime(fmt)}'"]
        if self.q.categories and self.q.fields.get("category"):
            where.append(f"{self.q.fields['category']} IN ({', '.join(soql_quote(c) for c in self.q.categories)})")
        if not self.paging:  # no paging: walk the object ids upwards
            where.append(f"{self.oid} > {state.extra.get('last_oid', -1)}")
        params: dict[str, Any] = {"where": " AND ".join(where), "outFields": "*",
                                  "orderByFields": f"{self.oid} ASC", "outSR": 4326, "returnGeometry": "true",
                                  "f": "json"}
        if self.paging:
            params.update({"resultOffset": state.rows, "resultRecordCount": self.page_size})
        if self.q.bbox:
            w, s, e, n = self.q.bbox
            params.update({"geometry": f"{w},{s},{e},{n}", "geometryType": "esriGeometryEnvelope", "inSR": 4326,
                           "spatialRel": "esriSpatialRelIntersects"})
        if self.q.token_param:
            params["token"] = self.q.token_param
        return f"{self.layer_url()}/query", params

    def parse(self, body, state):
        if not isinstance(body, dict):
            raise PortalError("ArcGIS answered with something that is not a JSON object.")
        if "error" in body:  # errors come with HTTP 200
            err = body["error"]
            raise PortalError(f"ArcGIS {err.get('code')}: {err.get('message')} {err.get('details') or ''}".strip())
        records = []
        for feat in body.get("features", []):
            rec = dict(feat.get("attributes") or {})
            geom = feat.get("geometry") or {}
            if "x" in geom and "y" in geom:
                rec["_geom_lon"], rec["_geom_lat"] = geom["x"], geom["y"]
            records.append(rec)
        more = body.get("exceededTransferLimit")
        if more is None:
            more = (body.get("properties") or {}).get("exceededTransferLimit", False)
        if records:
            state.extra["last_oid"] = records[-1].get(self.oid, state.extra.get("last_oid", -1))
            state.extra["empty_in_a_row"] = 0
        else:  # ArcGIS may set the flag with zero features: keep paging, but not forever
            state.extra["empty_in_a_row"] = state.extra.get("empty_in_a_row", 0) + 1
            if state.extra["empty_in_a_row"] > 5:
                more = False
        return records, bool(more)


class CKAN(Client):
    key = "ckan"

    def server_filters(self):
        return {"dates": None, "categories": None, "area": None}

    def windows(self, start, end):
        return [(start, end)]  # datastore_search cannot filter date ranges: one window, dates checked locally

    def request(self, window, state):
        params = {"resource_id": self.q.dataset, "limit": self.page_size, "offset": state.rows, "sort": "_id"}
        return f"{self.q.base_url.rstrip('/')}/api/3/action/datastore_search", params

    def parse(self, body, state):
        if not isinstance(body, dict) or not body.get("success"):
            err = body.get("error") if isinstance(body, dict) else body
            raise PortalError(f"CKAN: {err}")
        result = body["result"]
        records = result.get("records", [])
        if result.get("limit"):
            self.page_size = int(result["limit"])  # the server clamps silently: step by what it used
        total = result.get("total")
        state.extra["total"] = total
        done = not records or (total is not None and state.rows + len(records) >= int(total))
        return records, not done


CLIENTS = {c.key: c for c in (Socrata, Open311, SeeClickFix, ArcGIS, CKAN)}


class PageCache:
    """Completed pages on disk: cache_dir/<query key>/<window>/page_NNNNN.json plus a 'done' marker.

    Each page file starts with a line ``civic311-page <length> <crc32>`` for the JSON after it, and is written
    under a unique temporary name and renamed into place: a page cut short, damaged or written by two runs at
    once is never read as a shorter page. A damaged page makes its window be fetched again (and says so)."""

    MAGIC = b"civic311-page"

    def __init__(self, root, key: str, log: Callable[[str], None] = lambda m: None):
        from pathlib import Path

        self.root = Path(root) / key
        self.log = log
        self._writer: Any = None  # one background thread writes pages while the next one downloads
        self._pending: list = []

    def _dir(self, window):
        return self.root / f"{window[0]:%Y%m%dT%H%M%S}_{window[1]:%Y%m%dT%H%M%S}"

    def pages(self, window) -> list[list[dict]]:
        """The window's cached pages, in order; an empty list (and the window's cache dropped) when any page is
        damaged."""
        d = self._dir(window)
        if not d.exists():
            return []
        out = []
        files = sorted(d.glob("page_*.json"))
        for i, p in enumerate(files):
            page = self._read(p) if p.name == f"page_{i:05d}.json" else None
            if page is None:
                self.log(f"The cached page {p.name} of {window[0]:%Y-%m-%d %H:%M}…{window[1]:%Y-%m-%d %H:%M} is "
                         "damaged or missing: that window is fetched again.")
                self.drop(window)
                return []
            out.append(page)
        return out

    def _read(self, path) -> list | None:
        import zlib

        try:
            data = path.read_bytes()
            head, _, body = data.partition(b"\n")
            magic, length, crc = head.split(b" ")
            if magic != self.MAGIC or int(length) != len(body) or int(crc) != zlib.crc32(body):
                return None
            page = json.loads(body)
        except (OSError, ValueError):
            return None
        return page if isinstance(page, list) else None

    def drop(self, window) -> None:
        d = self._dir(window)
        for p in list(d.glob("page_*.json")) + [d / "done"]:
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def save(self, window, index: int, records: list[dict], raw: bytes | None = None) -> None:
        """Store a page (in the background: ``flush`` waits for it); ``raw`` is the response's own UTF-8 JSON when
        it is exactly the list of records (written as received instead of encoded again)."""
        if self._writer is None:
            from concurrent.futures import ThreadPoolExecutor

            self._writer = ThreadPoolExecutor(1, thread_name_prefix="civic311-page-cache")
        self._pending.append(self._writer.submit(self._write, window, index, records, raw))

    def flush(self) -> None:
        """Wait until every page handed to ``save`` is on disk (raises the first write error)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None

    @staticmethod
    def _atomic_write(path, *pieces: bytes) -> None:
        """Write under a name no other run uses, then rename into place (atomic on one file system)."""
        import os
        import uuid

        tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex}.part")
        try:
            with open(tmp, "wb") as fh:
                for piece in pieces:  # a header and a page body are written without joining them first
                    fh.write(piece)
            os.replace(tmp, path)
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise

    def _write(self, window, index: int, records: list[dict], raw: bytes | None) -> None:
        import zlib

        d = self._dir(window)
        d.mkdir(parents=True, exist_ok=True)
        body = raw if raw is not None else json.dumps(records).encode("utf-8")
        head = b"%s %d %d\n" % (self.MAGIC, len(body), zlib.crc32(body))
        self._atomic_write(d / f"page_{index:05d}.json", head, body)

    def done(self, window) -> bool:
        return (self._dir(window) / "done").exists()

    def mark_done(self, window) -> None:
        self.flush()  # 'done' only once every page of the window is written
        d = self._dir(window)
        d.mkdir(parents=True, exist_ok=True)
        self._atomic_write(d / "done", b"ok")


def query_key(api: str, query: Query, extra: str = "") -> str:
    """Cache folder name: a hash of the query, never of a token."""
    import hashlib

    text = json.dumps([api, query.base_url, query.dataset, query.fields, sorted(query.categories), query.bbox,
                       query.page_size, query.location_field, query.tz, extra], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def fetch_window(client: Client, window, http: Callable, cache: PageCache | None, cancelled: Callable[[], bool],
                 progress: Callable[[int], None] = lambda n: None, max_rows: int = 0,
                 raw: Callable[[], bytes | None] = lambda: None, log: Callable[[str], None] = lambda m: None
                 ) -> list[dict]:
    """All records of one window, resuming from cached pages; raises PagingIgnoredError when the window must be
    split (the caller splits it). ``raw()`` gives the undecoded UTF-8 body of the last response, if the transport
    kept it."""
    pages = cache.pages(window) if cache else []
    if cache and cache.done(window) and pages:
        return [r for page in pages for r in page]
    if client.fits_windows:
        if cache and pages:
            cache.drop(window)  # a window of this kind is stored whole: pages of an unfinished one are stale
        return fetch_window_fitting(client, window, http, cache, cancelled, progress, raw, log)
    state = PageState(index=len(pages), rows=sum(len(p) for p in pages))
    if pages and client.key == "arcgis":
        oid = getattr(client, "oid", "OBJECTID")
        last = [r for p in pages for r in p if oid in r]
        if last:
            state.extra["last_oid"] = last[-1][oid]
    records = [r for page in pages for r in page]
    while True:
        if cancelled():
            raise InterruptedError("Cancelled")
        url, params = client.request(window, state)
        body = http(url, params)
        page, more = client.parse(body, state)
        if cache:
            cache.save(window, state.index, page, raw() if page is body else None)
        records.extend(page)
        state.index += 1
        state.rows += len(page)
        progress(len(page))
        if not more or (max_rows and len(records) >= max_rows):
            break
    if cache and not (max_rows and len(records) >= max_rows):
        cache.mark_done(window)
    return records


def _ids(client: Client, page: list) -> list:
    return [str(r.get(client.id_key)) if isinstance(r, dict) else repr(r) for r in page]


def fetch_window_fitting(client: Client, window, http: Callable, cache: PageCache | None,
                         cancelled: Callable[[], bool], progress: Callable[[int], None],
                         raw: Callable[[], bytes | None], log: Callable[[str], None]) -> list[dict]:
    """One window of an API without a unique sort order (Open311, SeeClickFix), fetched as ONE page, so ties in
    the order cannot lose or repeat rows. When the window holds more than a page (the server's count says so,
    or a second page brings rows the first did not have), PagingIgnoredError asks the caller to split it. The
    server's real page size is learned on the way (servers clamp silently); a page past the end that repeats an
    earlier one (Zend/Laminas paginators) ends the window. Only a window of one second that still overflows a
    page is paged, in repeated passes until the ids stop growing (or reach the server's count)."""
    def get(index: int) -> tuple[list, Any, PageState]:
        if cancelled():
            raise InterruptedError("Cancelled")
        state = PageState(index=index)
        url, params = client.request(window, state)
        body = http(url, params)
        page, _ = client.parse(body, state)
        return page, body, state

    page1, body1, state1 = get(0)
    total = client.window_total(state1)
    splittable = (window[1] - window[0]) >= timedelta(seconds=2)
    asked = client.page_size
    complete: bool | None = None
    if total is not None:
        complete = total <= len(page1)
    elif not page1:
        complete = True
    elif client.page_cap is not None and len(page1) < client.page_cap:
        complete = True
    elif client.page_cap is None:
        page2, _, _ = get(1)
        first = set(_ids(client, page1))
        if not page2:
            complete = True
        elif set(_ids(client, page2)) <= first:  # the first page again: past the end, or paging ignored
            complete = len(page1) < asked
            if not complete:
                client.page_cap = len(page1)
        else:  # a second page with new rows: the server pages, and its page holds len(page1) rows
            client.page_cap = len(page1) if len(page1) <= asked else None
            complete = False
    else:
        complete = False
    if complete:
        records = page1
    elif splittable:
        raise PagingIgnoredError()
    else:
        records = _passes(client, get, page1, total, window, log)
    if cache:
        cache.save(window, 0, records, raw() if records is page1 and body1 is page1 else None)
        cache.mark_done(window)
    progress(len(records))
    return records


def _passes(client: Client, get: Callable, page1: list, total: int | None, window, log) -> list[dict]:
    """Every row of a one-second window that overflows a page: page until a page is empty or brings nothing new,
    and repeat the whole pass while it finds rows (an order with ties may differ between requests)."""
    found: dict[str, dict] = {}
    for pass_no in range(10):
        before = len(found)
        for index in range(0, 10_000):
            page = page1 if (pass_no == 0 and index == 0) else get(index)[0]
            ids = _ids(client, page)
            new = [i for i in ids if i not in found]
            for i, r in zip(ids, page):
                found.setdefault(i, r)
            if not page or not new:
                break
        if (total is not None and len(found) >= total) or (total is None and len(found) == before):
            break
    if total is not None and len(found) < total:
        log(f"WARNING {total} requests share the second {window[0]:%Y-%m-%d %H:%M:%S} and the server offers no "
            f"unique order: {len(found)} of them could be fetched.")
    elif len(found) > client.page_size:
        log(f"{len(found)} requests share the second {window[0]:%Y-%m-%d %H:%M:%S}: fetched in repeated passes "
            "until no new one appeared.")
    return list(found.values())


def fetch_all(client: Client, start: datetime, end: datetime, http: Callable, cache: PageCache | None,
              cancelled: Callable[[], bool], progress: Callable[[int], None] = lambda n: None,
              max_rows: int = 0, log: Callable[[str], None] = lambda m: None,
              sink: Callable[[list[dict]], None] | None = None, raw: Callable[[], bytes | None] = lambda: None
              ) -> list[dict]:
    """Every record from ``start`` to ``end``, window by window. With ``sink`` each completed window's records are
    handed over as they arrive (so the caller can turn them into columns and let the dicts go) and the returned
    list stays empty."""
    try:
        return _fetch_windows(client, start, end, http, cache, cancelled, progress, max_rows, log, sink, raw)
    finally:
        if cache:
            cache.close()  # the pages fetched so far are on disk, whether the fetch ended, failed or was cancelled


def _fetch_windows(client, start, end, http, cache, cancelled, progress, max_rows, log, sink, raw) -> list[dict]:
    client.prepare(http)
    out: list[dict] = []
    deliver = sink or out.extend
    total = 0
    splits = 0
    stack = list(reversed(client.windows(start, end)))
    while stack:
        window = stack.pop()
        try:
            records = fetch_window(client, window, http, cache, cancelled, progress,
                                   max_rows - total if max_rows else 0, raw, log)
        except PagingIgnoredError:
            if window[1] - window[0] < timedelta(seconds=2):
                raise PortalError("The server does not page even a one-second window.") from None
            mid = window[0] + (window[1] - window[0]) / 2
            mid = mid.replace(microsecond=0)
            splits += 1
            if splits <= 20 or splits % 100 == 0:
                log(f"{window[0]:%Y-%m-%d %H:%M:%S}…{window[1]:%Y-%m-%d %H:%M:%S} does not fit one page "
                    f"({client.page_cap or client.page_size} rows): splitting it in two ({splits} splits so far).")
            stack.extend([(mid, window[1]), (window[0], mid)])
            continue
        if max_rows:
            records = records[:max_rows - total]
        deliver(records)
        total += len(records)
        if max_rows and total >= max_rows:
            break
    return out
