# SPDX-License-Identifier: GPL-2.0-or-later
"""Portal clients: how each 311 API is asked for one page, how its answer is read, and when to stop.

Pure: no network here. The fetch loop (``fetch_window``) takes an ``http(url, params, headers)`` function that
returns the decoded JSON body (raising on HTTP errors), and a page cache, so paging is tested without a server.
Paging never loses or repeats a row: a total order ending in a unique key, date windows instead of deep
offsets, and each API's end-of-data signal (short page, exceededTransferLimit, next_page, total).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

API_NAMES = ("Socrata SODA", "Open311 GeoReport v2", "SeeClickFix v2", "ArcGIS FeatureServer", "CKAN DataStore")
API_KEYS = ("socrata", "open311", "seeclickfix", "arcgis", "ckan")
DEFAULT_PAGE = {"socrata": 50_000, "open311": 500, "seeclickfix": 100, "arcgis": 2000, "ckan": 32_000}


class PortalError(Exception):
    """The portal answered with an error (its own message is in the text)."""


class PagingIgnoredError(Exception):
    """The server ignores paging inside this window: fetch it again as two halves."""


def soql_quote(value: str) -> str:
    """A SoQL / SQL string literal: single quotes doubled, so a value cannot change the query."""
    return "'" + str(value).replace("'", "''") + "'"


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
    token_param: str | None = None  # ArcGIS token (a query parameter); never logged


@dataclass
class PageState:
    index: int = 0  # pages fetched in this window
    rows: int = 0  # rows fetched in this window
    extra: dict = field(default_factory=dict)


class Client:
    key = ""
    filters_dates_on_server = True
    filters_categories_on_server = False
    filters_area_on_server = False

    def __init__(self, query: Query):
        self.q = query
        self.page_size = query.page_size or DEFAULT_PAGE[self.key]

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
    filters_categories_on_server = True
    filters_area_on_server = True

    def request(self, window, state):
        created = self.q.fields.get("created_at", "created_date")
        fmt = "%Y-%m-%dT%H:%M:%S"
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

    def request(self, window, state):
        params = {"start_date": window[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "end_date": window[1].strftime("%Y-%m-%dT%H:%M:%SZ"), "page": state.index + 1,
                  "page_size": self.page_size}
        if self.q.dataset:
            params["jurisdiction_id"] = self.q.dataset
        return f"{self.q.base_url.rstrip('/')}/requests.json", params

    def parse(self, body, state):
        if isinstance(body, dict):
            raise PortalError(f"Open311: {body.get('description') or body}")
        if not isinstance(body, list):
            raise PortalError("Open311 answered with something that is not a list of requests.")
        if body and isinstance(body[0], dict) and "code" in body[0] and "description" in body[0] and \
                "service_request_id" not in body[0]:
            raise PortalError(f"Open311 {body[0]['code']}: {body[0]['description']}")
        ids = [r.get("service_request_id") for r in body]
        seen = state.extra.setdefault("seen_first_ids", None)
        if state.index == 1 and body and seen is not None and ids[: len(seen)] == seen:
            raise PagingIgnoredError()  # page 2 repeats page 1: the server ignores `page`
        if state.index == 0:
            state.extra["seen_first_ids"] = ids[:20]
        return body, len(body) > 0 and len(body) >= min(self.page_size, 1000)


class SeeClickFix(Client):
    key = "seeclickfix"
    filters_area_on_server = True

    def request(self, window, state):
        params = {"after": window[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "before": window[1].strftime("%Y-%m-%dT%H:%M:%SZ"), "sort": "created_at",
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
    filters_categories_on_server = True
    filters_area_on_server = True

    def layer_url(self):
        ds = self.q.dataset.strip()
        if ds.startswith("http"):
            return ds.rstrip("/")
        return f"{self.q.base_url.rstrip('/')}/{ds.lstrip('/')}".rstrip("/")

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
        fmt = "%Y-%m-%d %H:%M:%S"
        where = [f"{created} >= TIMESTAMP '{window[0].strftime(fmt)}'",
                 f"{created} < TIMESTAMP '{window[1].strftime(fmt)}'"]
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
    filters_dates_on_server = False

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
    """Completed pages on disk: cache_dir/<query key>/<window>/page_NNNNN.json plus a 'done' marker."""

    def __init__(self, root, key: str):
        from pathlib import Path

        self.root = Path(root) / key
        self._writer: Any = None  # one background thread writes pages while the next one downloads
        self._pending: list = []

    def _dir(self, window):
        return self.root / f"{window[0]:%Y%m%dT%H%M%S}_{window[1]:%Y%m%dT%H%M%S}"

    def pages(self, window) -> list[list[dict]]:
        d = self._dir(window)
        if not d.exists():
            return []
        out = []
        for p in sorted(d.glob("page_*.json")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except ValueError:
                break  # a page cut short by a crash: fetch it again
        return out

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

    def _write(self, window, index: int, records: list[dict], raw: bytes | None) -> None:
        d = self._dir(window)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"page_{index:05d}.json.part"
        if raw is not None:
            tmp.write_bytes(raw)
        else:
            tmp.write_text(json.dumps(records), encoding="utf-8")
        tmp.replace(d / f"page_{index:05d}.json")

    def done(self, window) -> bool:
        return (self._dir(window) / "done").exists()

    def mark_done(self, window) -> None:
        self.flush()  # 'done' only once every page of the window is written
        d = self._dir(window)
        d.mkdir(parents=True, exist_ok=True)
        (d / "done").write_text("ok")


def query_key(api: str, query: Query, extra: str = "") -> str:
    """Cache folder name: a hash of the query, never of a token."""
    import hashlib

    text = json.dumps([api, query.base_url, query.dataset, query.fields, sorted(query.categories), query.bbox,
                       query.page_size, query.location_field, extra], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def fetch_window(client: Client, window, http: Callable, cache: PageCache | None, cancelled: Callable[[], bool],
                 progress: Callable[[int], None] = lambda n: None, max_rows: int = 0,
                 raw: Callable[[], bytes | None] = lambda: None) -> list[dict]:
    """All records of one window, resuming from cached pages; raises PagingIgnoredError when the server ignores
    paging (the caller splits the window). ``raw()`` gives the undecoded UTF-8 body of the last response, if
    the transport kept it."""
    pages = cache.pages(window) if cache else []
    if cache and cache.done(window):
        return [r for page in pages for r in page]
    state = PageState(index=len(pages), rows=sum(len(p) for p in pages))
    if pages and client.key == "arcgis":
        oid = getattr(client, "oid", "OBJECTID")
        last = [r for p in pages for r in p if oid in r]
        if last:
            state.extra["last_oid"] = last[-1][oid]
    records = [r for page in pages for r in page]
    if pages and client.key == "open311":
        state.extra["seen_first_ids"] = [r.get("service_request_id") for r in pages[0][:20]]
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
    stack = list(reversed(client.windows(start, end)))
    while stack:
        window = stack.pop()
        try:
            records = fetch_window(client, window, http, cache, cancelled, progress,
                                   max_rows - total if max_rows else 0, raw)
        except PagingIgnoredError:
            if window[1] - window[0] <= timedelta(hours=1):
                raise PortalError("The server ignores paging even for a one-hour window.") from None
            mid = window[0] + (window[1] - window[0]) / 2
            mid = mid.replace(microsecond=0)
            log(f"The server does not page {window[0]:%Y-%m-%d}…{window[1]:%Y-%m-%d}: splitting it in two.")
            stack.extend([(mid, window[1]), (window[0], mid)])
            continue
        if max_rows:
            records = records[:max_rows - total]
        deliver(records)
        total += len(records)
        if max_rows and total >= max_rows:
            break
    return out
