# SPDX-License-Identifier: GPL-2.0-or-later
"""A local mock of the five portal APIs (Socrata, Open311, SeeClickFix, ArcGIS, CKAN), built from the shapes of
the real samples in ../shared/data/api_samples, with fault injection. Serve it with the http_server fixture."""

from __future__ import annotations

import json
import random
import re
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

CITY_TZ = ZoneInfo("America/Chicago")  # the mock city's rows are local wall-clock times in this zone


def local(moment: datetime) -> datetime:
    """A naive local time of the mock city as an aware datetime (its real offset, DST included)."""
    return moment.replace(tzinfo=CITY_TZ)


def from_instant(text: str) -> datetime:
    """An ISO instant sent by a client ('Z' or an offset) as the mock city's naive local time."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return moment  # no offset: already a local wall-clock time
    return moment.astimezone(CITY_TZ).replace(tzinfo=None)


def utc_of(moment: datetime) -> datetime:
    return local(moment).astimezone(timezone.utc).replace(tzinfo=None)

CATEGORIES = ["Pothole in Street", "Rodent Baiting/Rat Complaint", "Graffiti Removal", "Street Light Out"]


def make_rows(n=600, seed=11, start=datetime(2024, 1, 3)):
    """Chicago-like requests over three months, with the bad rows real 311 data has."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        created = start + timedelta(minutes=rng.randrange(0, 60 * 24 * 85))
        rows.append({"id": f"SR24-{i:06d}", "created": created,
                     "closed": created + timedelta(hours=rng.randrange(1, 400)) if rng.random() < 0.7 else None,
                     "status": "Completed" if rng.random() < 0.7 else "Open",
                     "category": CATEGORIES[rng.randrange(len(CATEGORIES))],
                     "lat": round(41.75 + rng.random() * 0.2, 6), "lon": round(-87.75 + rng.random() * 0.15, 6),
                     "address": f"{rng.randrange(100, 9000)} W TEST ST"})
    rows[5]["lat"] = rows[5]["lon"] = None  # missing coordinates
    rows[6]["lat"], rows[6]["lon"] = 0.0, 0.0  # zero coordinates
    rows[7]["lat"], rows[7]["lon"] = rows[7]["lon"], rows[7]["lat"]  # swapped
    rows[8]["bad_date"] = True  # unparseable date
    rows[9]["lat"] = rows[9]["lon"] = None  # located only by state-plane X/Y
    rows[9]["x"], rows[9]["y"] = 1164561.0, 1888884.37
    rows[10]["category"] = "O'Hare's \"quoted\" category"
    dup = dict(rows[11])
    rows.append(dup)  # the same request twice in the source
    return rows


class Portal:
    """In-memory portal with fault switches; ``handle(req)`` is the http_server handler."""

    def __init__(self, rows=None, **faults):
        self.rows = rows if rows is not None else make_rows()
        self.faults = {"socrata_2_0": False, "fail_429": 0, "retry_after": "1", "fail_500": 0, "hang_once": 0.0,
                       "truncate_once": False, "duplicate_across_pages": False, "insert_while_paging": False,
                       "ignore_paging": False, "arcgis_max": 50, "ckan_rows_max": 70, "token": None,
                       "fail_after_requests": 0, "open311_max": 500, "repeat_last_page": False,
                       "shuffle_ties": False, "inclusive_end": False, "arcgis_error_200": 0, "drop_fields": (),
                       "cut_body_once": False, "stall_once": 0.0, "drip_once": 0.0, "gzip_bomb": 0,
                       "redirect_to": None, "open311_key": None, "plain_text_error_once": False}
        self.faults.update(faults)
        self.log: list[tuple[str, dict, dict]] = []
        self.counter = 0
        self.inserted = False

    # ---------------------------------------------------------------- plumbing
    def handle(self, req):
        parts = urlsplit(req.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.log.append((parts.path, params, dict(req.headers)))
        self.counter += 1
        f = self.faults
        if f["fail_after_requests"] and self.counter > f["fail_after_requests"]:
            return self.json({"message": "server gone"}, 503)
        if f["fail_429"] > 0:
            f["fail_429"] -= 1
            return 429, {"Retry-After": f["retry_after"]}, b""
        if f["fail_500"] > 0:
            f["fail_500"] -= 1
            return self.json({"message": "Internal Server Error"}, 500)
        if f["hang_once"]:
            delay, f["hang_once"] = f["hang_once"], 0.0
            time.sleep(delay)
        if f["redirect_to"]:  # e.g. a CDN on another host: the query string is carried over
            return 302, {"Location": f["redirect_to"] + req.path}, b""
        if f["gzip_bomb"]:
            import gzip

            size, f["gzip_bomb"] = f["gzip_bomb"], 0
            return 200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, \
                gzip.compress(b"[" + b" " * size + b"]", 6)
        for prefix, handler in (("/resource/", self.socrata), ("/open311/", self.open311),
                                ("/api/v2/issues", self.seeclickfix), ("/arcgis/", self.arcgis),
                                ("/api/3/action/", self.ckan)):
            if parts.path.startswith(prefix):
                status, headers, body = handler(parts.path, params, req.headers)
                if f["truncate_once"] and status == 200 and len(body) > 20:
                    f["truncate_once"] = False
                    body = body[: len(body) // 2]
                if f["cut_body_once"] and status == 200 and len(body) > 20:  # connection dropped half-way
                    f["cut_body_once"] = False
                    return status, {**headers, "Content-Length": str(len(body))}, [body[: len(body) // 2]]
                if f["stall_once"] and status == 200 and len(body) > 20:  # half a body, then silence
                    delay, f["stall_once"] = f["stall_once"], 0.0
                    return status, headers, stalled(body, delay)
                if f["drip_once"] and status == 200 and len(body) > 20:  # a byte at a time, never idle long
                    seconds, f["drip_once"] = f["drip_once"], 0.0
                    return status, headers, dripped(body, seconds)
                return status, headers, body
        return self.json({"error": "no such endpoint"}, 404)

    @staticmethod
    def json(obj, status=200, headers=None):
        return status, {"Content-Type": "application/json;charset=utf-8", **(headers or {})}, \
            json.dumps(obj).encode()

    def in_window(self, start, end):
        return [r for r in self.rows if start <= r["created"] < end]

    def maybe_insert(self, rows_before):
        """Insert a new early request while a client pages (shifts every later offset by one)."""
        if self.faults["insert_while_paging"] and not self.inserted and rows_before > 0:
            self.inserted = True
            first = min(r["created"] for r in self.rows)
            self.rows.append({"id": "SR24-INSERTED", "created": first + timedelta(seconds=1), "closed": None,
                              "status": "Open", "category": CATEGORIES[0], "lat": 41.8, "lon": -87.7,
                              "address": "1 NEW ST"})

    # ---------------------------------------------------------------- Socrata
    def socrata_row(self, r):
        out = {"sr_number": r["id"], "sr_type": r["category"], "status": r["status"],
               "created_date": "2024-13-45T99:00:00.000" if r.get("bad_date") else
               r["created"].strftime("%Y-%m-%dT%H:%M:%S.000"), "street_address": r["address"]}
        if r["closed"]:
            out["closed_date"] = r["closed"].strftime("%Y-%m-%dT%H:%M:%S.000")
        if r["lat"] is not None:  # null columns are omitted, numbers are strings
            out["latitude"], out["longitude"] = str(r["lat"]), str(r["lon"])
            out["location"] = {"latitude": str(r["lat"]), "longitude": str(r["lon"]),
                               "human_address": json.dumps({"address": "", "city": "", "state": "", "zip": ""})}
        if r.get("x"):
            out["x_coordinate"], out["y_coordinate"] = str(r["x"]), str(r["y"])
        return out

    def socrata(self, path, p, headers):
        if not re.fullmatch(r"/resource/test-0311\.json", path):
            return self.json({"code": "dataset.missing", "error": True, "message": "Not found",
                              "data": {"id": path.split("/")[-1]}}, 404)
        if self.faults["token"] and headers.get("X-App-Token") != self.faults["token"]:
            return self.json({"code": "authentication_required", "error": True, "message": "Bad app token"}, 403)
        limit = int(p.get("$limit", 1000))
        if self.faults["socrata_2_0"] and limit > 50000:
            return self.json({"message": "length must be <= 50000", "errorCode": "query.soql.malformed"}, 400)
        where = p.get("$where", "")
        m = re.findall(r"created_date (>=|<) '([^']*)'", where)
        rows = list(self.rows)
        for op, value in m:
            t = datetime.fromisoformat(value)
            rows = [r for r in rows if (r["created"] >= t if op == ">=" else r["created"] < t)]
        cat = re.search(r"sr_type in \((.*)\)", where)
        if cat:
            wanted = [v.replace("''", "'") for v in re.findall(r"'((?:[^']|'')*)'", cat.group(1))]
            rows = [r for r in rows if r["category"] in wanted]
        if "nosuchcolumn" in where:
            return self.json({"message": "Query coordinator error: query.soql.no-such-column; No such column: "
                                         "nosuchcolumn", "errorCode": "query.soql.no-such-column"}, 400)
        order = p.get("$order")
        if order and order.endswith(":id"):
            rows.sort(key=lambda r: (r["created"], r["id"]))
        else:  # unspecified order: a different shuffle for every request
            random.Random(self.counter).shuffle(rows)
        offset = int(p.get("$offset", 0))
        self.maybe_insert(offset)
        page = rows[offset:offset + limit]
        if self.faults["duplicate_across_pages"] and offset > 0 and offset - 1 < len(rows) and page:
            page = [rows[offset - 1]] + page  # the last row of the previous page, served again
        body = "[" + "\n,".join(json.dumps(self.socrata_row(r)) for r in page) + "]"
        return 200, {"Content-Type": "application/json;charset=utf-8", "X-SODA2-Fields": '["sr_number"]'}, \
            body.encode()

    # ---------------------------------------------------------------- Open311
    def open311(self, path, p, headers):
        if not path.endswith("/requests.json"):
            return self.json([{"code": 404, "description": "Not found"}], 404)
        if self.faults["open311_key"] and p.get("api_key") != self.faults["open311_key"]:
            return self.json([{"code": 403, "description": "Invalid api_key"}], 403)
        try:
            start, end = from_instant(p["start_date"]), from_instant(p["end_date"])
        except (KeyError, ValueError):
            return self.json([{"code": 400, "description": "start_date and end_date required"}], 400)
        if end - start > timedelta(days=90):
            return self.json([{"code": 400, "description": "Date range may not exceed 90 days"}], 400)
        rows = [r for r in self.rows if start <= r["created"] <= end] if self.faults["inclusive_end"] else \
            self.in_window(start, end)
        if self.faults["shuffle_ties"]:  # ordered by time only: ties come in a different order every time
            random.Random(self.counter).shuffle(rows)
            rows.sort(key=lambda r: r["created"])
        else:
            rows.sort(key=lambda r: (r["created"], r["id"]))
        size = min(int(p.get("page_size", 50)), self.faults["open311_max"])  # clamped silently
        page_no = int(p.get("page", 1))
        if self.faults["ignore_paging"]:
            page = rows[:1000]
        else:
            page = rows[(page_no - 1) * size: page_no * size]
            if not page and self.faults["repeat_last_page"] and rows:  # Zend/Laminas: past the end, the last page
                last = (len(rows) - 1) // size
                page = rows[last * size:(last + 1) * size]
        out = []
        for r in page:
            rec = {"service_request_id": r["id"], "status": "closed" if r["closed"] else "open",
                   "service_name": r["category"], "service_code": "4fd3b656e750846c53000004",
                   "requested_datetime": "not a date" if r.get("bad_date") else local(r["created"]).isoformat(),
                   "updated_datetime": local(r["closed"] or r["created"]).isoformat(),
                   "address": r["address"], "lat": r["lat"], "long": r["lon"], "media_url": ""}
            out.append(rec)
        return self.json(out)

    # ---------------------------------------------------------------- SeeClickFix
    def seeclickfix(self, path, p, headers):
        if not headers.get("User-Agent"):
            return self.json({"request": "User-Agent required"}, 400)
        rows = self.in_window(from_instant(p["after"]), from_instant(p["before"]))
        if self.faults["shuffle_ties"]:
            random.Random(self.counter).shuffle(rows)
        rows.sort(key=lambda r: r["created"], reverse=p.get("sort_direction", "DESC") == "DESC")
        per_page = min(int(p.get("per_page", 20)), 100)
        page_no = int(p.get("page", 1))
        page = rows[(page_no - 1) * per_page: page_no * per_page]
        pages = max(1, -(-len(rows) // per_page))
        issues = [{"id": int(r["id"].split("-")[1]), "status": r["status"].replace("Completed", "Closed"),
                   "summary": r["category"], "lat": r["lat"], "lng": r["lon"], "address": r["address"],
                   "created_at": local(r["created"]).isoformat(),
                   "closed_at": None if not r["closed"] else local(r["closed"]).isoformat(),
                   "request_type": {"id": 7, "title": r["category"]},
                   "reporter": {"id": 1, "name": "Private Person"}} for r in page]
        nxt = page_no + 1 if page_no < pages else None
        return self.json({"metadata": {"pagination": {"entries": len(rows), "page": page_no, "per_page": per_page,
                                                      "pages": pages, "next_page": nxt, "previous_page": None}},
                          "issues": issues, "errors": {}})

    # ---------------------------------------------------------------- ArcGIS
    def arcgis(self, path, p, headers):
        if self.faults["token"] and p.get("token") != self.faults["token"]:
            code = 499 if not p.get("token") else 498
            return self.json({"error": {"code": code, "message": "Token Required" if code == 499 else
                                        "Invalid Token", "details": []}})
        if self.faults["arcgis_error_200"] > 0:  # a transient failure reported inside an HTTP-200 answer
            self.faults["arcgis_error_200"] -= 1
            return self.json({"error": {"code": 500, "message": "Error performing query operation",
                                        "details": []}})
        if path.endswith("/FeatureServer/0"):
            return self.json({"currentVersion": 10.81, "maxRecordCount": self.faults["arcgis_max"],
                              "objectIdField": "OBJECTID", "advancedQueryCapabilities": {"supportsPagination": True},
                              "fields": [{"name": "OBJECTID", "type": "esriFieldTypeOID"}]})
        if not path.endswith("/FeatureServer/0/query"):
            return self.json({"error": {"code": 400, "message": "Invalid URL", "details": []}})
        where = p.get("where", "")
        if "DROP" in where.upper():
            return self.json({"error": {"code": 400, "message": "Invalid query parameters", "details": []}})
        bounds = re.findall(r"CreatedDate (>=|<) TIMESTAMP '([^']*)'", where)
        rows = list(self.rows)
        for op, value in bounds:  # date fields hold UTC, and so do TIMESTAMP literals
            t = datetime.fromisoformat(value)
            rows = [r for r in rows if (utc_of(r["created"]) >= t if op == ">=" else utc_of(r["created"]) < t)]
        cat = re.search(r"SRType IN \((.*)\)", where)
        if cat:
            wanted = [v.replace("''", "'") for v in re.findall(r"'((?:[^']|'')*)'", cat.group(1))]
            rows = [r for r in rows if r["category"] in wanted]
        index = {r["id"]: i + 1 for i, r in enumerate(self.rows)}
        rows.sort(key=lambda r: index[r["id"]])
        offset = int(p.get("resultOffset", 0))
        count = min(int(p.get("resultRecordCount", self.faults["arcgis_max"])), self.faults["arcgis_max"])
        page = rows[offset:offset + count]
        feats = []
        for r in page:
            epoch = int((utc_of(r["created"]) - datetime(1970, 1, 1)).total_seconds() * 1000)
            feats.append({"attributes": {"OBJECTID": index[r["id"]], "ServiceRequestNum": r["id"],
                                         "SRType": r["category"], "SRStatus": r["status"],
                                         "CreatedDate": None if r.get("bad_date") else epoch,
                                         "CloseDate": None, "Address": r["address"],
                                         "Agency": r.get("agency", "Streets and Sanitation")},
                          "geometry": None if r["lat"] is None else {"x": r["lon"], "y": r["lat"]}})
            for name in self.faults["drop_fields"]:
                feats[-1]["attributes"].pop(name, None)
        return self.json({"objectIdFieldName": "OBJECTID", "geometryType": "esriGeometryPoint",
                          "spatialReference": {"wkid": 4326}, "features": feats,
                          "exceededTransferLimit": offset + len(page) < len(rows)})

    # ---------------------------------------------------------------- CKAN
    def ckan(self, path, p, headers):
        if not path.endswith("/datastore_search"):
            return self.json("Bad request - Action name not known: " + path.rsplit("/", 1)[-1], 400)
        if p.get("resource_id") != "res-311":
            return self.json({"help": "x", "success": False, "error": {"__type": "Not Found Error",
                                                                        "message": "Not found: Resource"}}, 404)
        limit = min(int(p.get("limit", 100)), self.faults["ckan_rows_max"])  # clamped silently
        offset = int(p.get("offset", 0))
        rows = self.rows  # sorted by _id (insertion order)
        page = rows[offset:offset + limit]
        records = [{"_id": offset + i + 1, "case_id": r["id"], "open_date": r["created"].strftime(
            "%Y-%m-%d %H:%M:%S"), "close_date": None if not r["closed"] else r["closed"].strftime(
            "%Y-%m-%d %H:%M:%S"), "case_status": r["status"], "service_name": r["category"],
            "full_address": r["address"], "latitude": None if r["lat"] is None else str(r["lat"]),
            "longitude": None if r["lon"] is None else str(r["lon"])} for i, r in enumerate(page)]
        return self.json({"help": "x", "success": True, "result": {
            "resource_id": "res-311", "limit": limit, "total": len(rows), "records": records,
            "_links": {"start": "/api/3/action/datastore_search", "next": f"/api/3/action/datastore_search?"
                       f"offset={offset + limit}"}}})


def stalled(body: bytes, seconds: float):
    """Half the body, then nothing for ``seconds`` (the client's read timeout should fire), then the rest."""
    yield body[: len(body) // 2]
    time.sleep(seconds)
    yield body[len(body) // 2:]


def dripped(body: bytes, seconds: float):
    """The body spread over ``seconds``, a few bytes at a time: no single read waits long."""
    step = max(1, len(body) // max(1, int(seconds / 0.05)))
    for i in range(0, len(body), step):
        yield body[i:i + step]
        time.sleep(0.05)
