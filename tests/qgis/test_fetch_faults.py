# SPDX-License-Identifier: GPL-2.0-or-later
"""Fetch against portals that misbehave as real ones do (issue #13): bodies cut or stalled, clamped page sizes,
pages repeated past the end, ties, local day boundaries, errors inside HTTP-200 answers, damaged or shared
caches, gzip bombs and drips; and secrets that never leave the host the user configured, in any encoding."""

import base64
import json
import threading
import time
from datetime import datetime, timedelta
from urllib.parse import quote, quote_plus

import pytest
from portal_mock import Portal, make_rows
from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsProcessingException, QgsProcessingFeedback
from test_fetch_import import ALL_ROWS, check_equation, expected_counts, fetch, month_range

ARCGIS_MAP = json.dumps({"request_id": "ServiceRequestNum", "created_at": "CreatedDate", "category": "SRType",
                         "status": "SRStatus", "address": "Address"})


def ids(res):
    out = [f["request_id"] for f in res["OUTPUT"].getFeatures()]
    assert len(out) == len(set(out))
    return set(out)


def source_ids(rows, start, end, api=""):
    """Ids of the usable mock rows created in [start, end) (as the API names them)."""
    bad = {"SR24-000005", "SR24-000006", "SR24-000009"} | (set() if api == "seeclickfix" else {"SR24-000008"})
    return {str(int(r["id"].split("-")[1])) if api == "seeclickfix" else r["id"]
            for r in rows if start <= r["created"] < end and r["id"] not in bad}


def open311(run_alg, url, tmp_path, **extra):
    return fetch(run_alg, url + "/open311/v2", tmp_path, api=1, dataset="", **extra)


def auth_config(token, name="token"):
    manager = QgsApplication.authManager()
    manager.setMasterPassword("civic311-tests", True)
    cfg = QgsAuthMethodConfig("Basic")
    cfg.setName(name)
    cfg.setConfig("username", "ignored")
    cfg.setConfig("password", token)
    assert manager.storeAuthenticationConfig(cfg)
    return cfg.id()


def forms(secret):
    """Every form a secret could leak in."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret), quote(secret, safe="").lower(),
            base64.b64encode(secret.encode()).decode()}


def assert_nowhere(secret, *texts):
    blob = "\n".join(texts)
    for form in forms(secret):
        assert form not in blob, form


def everything_written(res, tmp_path):
    """Feedback, outputs and every cache file, as one text."""
    texts = ["\n".join(res["_feedback"].messages)]
    for key in ("OUTPUT", "REJECTED"):
        if key in res:
            texts.append("\n".join(str(f.attributes()) for f in res[key].getFeatures()))
    for path in tmp_path.rglob("*"):
        texts.append(str(path))
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


# ------------------------------------------------------------------ 1. bodies cut or stalled after the headers
@pytest.mark.parametrize("fault", [{"cut_body_once": True}, {"stall_once": 4.0}])
@pytest.mark.parametrize("api", [0, 1])
def test_a_body_cut_or_stalled_half_way_is_fetched_again(run_alg, http_server, tmp_path, fault, api):
    portal = Portal(**fault)
    url = http_server(portal.handle)
    res = open311(run_alg, url, tmp_path) if api == 1 else fetch(run_alg, url, tmp_path)
    check_equation(res)
    assert ids(res) == source_ids(ALL_ROWS, *month_range()) | ({"SR24-000009"} if api == 0 else set())
    assert "retrying" in "\n".join(res["_feedback"].messages)


# ------------------------------------------------------------------ 2-4. Open311: clamps, repeated pages, ties
def test_open311_clamped_page_size_loses_nothing(run_alg, http_server, tmp_path):
    rows = make_rows(n=2420, seed=5)
    portal = Portal(rows=rows, open311_max=100)
    res = open311(run_alg, http_server(portal.handle), tmp_path, PAGE_SIZE=1000)
    check_equation(res)
    fetched, _, _, dup = expected_counts(rows, *month_range())
    assert (res["FETCHED"], res["DUPLICATES"]) == (fetched, dup)  # every source row once
    assert ids(res) == source_ids(rows, *month_range())


@pytest.mark.parametrize("page_size", [0, 50])
def test_open311_server_repeating_the_last_page_ends(run_alg, http_server, tmp_path, page_size):
    # a server that answered forever would fail after 400 requests: the fetch must end well before
    portal = Portal(repeat_last_page=True, fail_after_requests=400)
    res = open311(run_alg, http_server(portal.handle), tmp_path, PAGE_SIZE=page_size)
    check_equation(res)
    assert ids(res) == source_ids(ALL_ROWS, *month_range())
    assert res["DUPLICATES"] == expected_counts(ALL_ROWS, *month_range())[3]  # nothing counted twice
    assert len(portal.log) < 100


def tied_rows(n=120, tied=40, at=datetime(2024, 2, 14, 9, 30)):
    """n requests in February, ``tied`` of them created in the same second."""
    rows = make_rows(n=n, seed=3, start=datetime(2024, 2, 2))
    for r in rows[20:20 + tied]:
        r["created"] = at
    for r in rows:
        r["created"] = min(r["created"], datetime(2024, 2, 28))
    return rows


@pytest.mark.parametrize("api", ["open311", "seeclickfix"])
@pytest.mark.parametrize("tied", [40, 70])
def test_ties_on_one_timestamp_lose_no_row(run_alg, http_server, tmp_path, api, tied):
    rows = tied_rows(tied=tied)
    portal = Portal(rows=rows, shuffle_ties=True, open311_max=50)
    url = http_server(portal.handle)
    extra = {"PAGE_SIZE": 50, "start": "2024-02-01", "end": "2024-02-29"}
    if api == "open311":
        res = open311(run_alg, url, tmp_path, **extra)
    else:
        res = fetch(run_alg, url + "/api/v2", tmp_path, api=2, dataset="test-city", **extra)
    check_equation(res)
    assert ids(res) == source_ids(rows, datetime(2024, 2, 1), datetime(2024, 3, 1), api)


# ------------------------------------------------------------------ 5-6. local day boundaries; no time-zone guess
@pytest.mark.parametrize("api", ["open311", "seeclickfix", "arcgis"])
def test_day_boundaries_are_local_midnights(run_alg, http_server, tmp_path, api):
    rows = make_rows(n=200, seed=9, start=datetime(2024, 2, 2))
    for r in rows:
        r["created"] = min(r["created"], datetime(2024, 2, 28, 12))
    rows[30]["created"] = datetime(2024, 1, 31, 21, 0)  # the evening before START_DATE (03:00 UTC on Feb 1)
    rows[31]["created"] = datetime(2024, 2, 29, 21, 0)  # the last evening (03:00 UTC on Mar 1)
    portal = Portal(rows=rows)
    url = http_server(portal.handle)
    extra = {"start": "2024-02-01", "end": "2024-02-29", "TIMEZONE": "America/Chicago"}
    if api == "open311":
        res = open311(run_alg, url, tmp_path, **extra)
    elif api == "seeclickfix":
        res = fetch(run_alg, url + "/api/v2", tmp_path, api=2, dataset="test-city", **extra)
    else:
        res = fetch(run_alg, url, tmp_path, api=3, dataset=url + "/arcgis/rest/services/311/FeatureServer/0",
                    FIELD_MAP=ARCGIS_MAP, **extra)
    check_equation(res)
    got = ids(res)
    first, last = (str(int(r["id"].split("-")[1])) if api == "seeclickfix" else r["id"] for r in rows[30:32])
    assert first not in got and last in got
    out = {f["request_id"]: f["created_at"].toPyDateTime() for f in res["OUTPUT"].getFeatures()}
    assert out[last] == datetime(2024, 2, 29, 21, 0)  # the city's wall-clock time
    params = [p for path, p, _ in portal.log if path.endswith(("requests.json", "/issues"))]
    if params:
        start_key = "start_date" if api == "open311" else "after"
        assert params[0][start_key] == "2024-02-01T06:00:00Z"  # Chicago midnight (CST) as UTC
    else:
        wheres = [p["where"] for path, p, _ in portal.log if path.endswith("/query")]
        assert "CreatedDate >= TIMESTAMP '2024-02-01 06:00:00'" in wheres[0]


def test_custom_fetch_guesses_no_time_zone(run_alg, http_server, tmp_path):
    """An ArcGIS layer with an Agency column is not taken for New York: without TIMEZONE times stay UTC, and the
    log says to set TIMEZONE."""
    rows = make_rows(n=50, seed=2, start=datetime(2024, 2, 2))
    for r in rows:
        r["agency"] = "DOT"
    url = http_server(Portal(rows=rows).handle)
    layer = url + "/arcgis/rest/services/311/FeatureServer/0"
    res = fetch(run_alg, url, tmp_path, api=3, dataset=layer, FIELD_MAP=ARCGIS_MAP, start="2024-02-01",
                end="2024-03-31")
    row = next(r for r in rows[20:] if r["created"] < datetime(2024, 3, 1))
    got = {f["request_id"]: f["created_at"].toPyDateTime() for f in res["OUTPUT"].getFeatures()}[row["id"]]
    assert got == row["created"] + timedelta(hours=6)  # UTC (February: CST, UTC-6), not New York time
    assert "TIMEZONE" in "\n".join(res["_feedback"].messages)


# ------------------------------------------------------------------ 7. ArcGIS errors inside HTTP-200 bodies
def test_arcgis_transient_errors_in_200_bodies_are_retried(run_alg, http_server, tmp_path):
    portal = Portal(arcgis_error_200=2)
    url = http_server(portal.handle)
    res = fetch(run_alg, url, tmp_path, api=3, dataset=url + "/arcgis/rest/services/311/FeatureServer/0",
                FIELD_MAP=ARCGIS_MAP)
    check_equation(res)
    assert res["FETCHED"] == expected_counts(ALL_ROWS, *month_range())[0]
    assert "Error performing query operation — retrying" in "\n".join(res["_feedback"].messages)
    denied = Portal(token="tok")  # 499 stays final, with the portal's message
    durl = http_server(denied.handle)
    with pytest.raises(QgsProcessingException, match="499: Token Required"):
        fetch(run_alg, durl, tmp_path / "d", api=3, dataset=durl + "/arcgis/rest/services/311/FeatureServer/0",
              FIELD_MAP=ARCGIS_MAP)
    assert len(denied.log) == 1


# ------------------------------------------------------------------ 9. Open311 keys go in api_key
def test_open311_key_is_sent_as_api_key_and_kept_secret(run_alg, http_server, tmp_path):
    token = "o311+Key/with=signs"
    portal = Portal(open311_key=token)
    res = open311(run_alg, http_server(portal.handle), tmp_path, AUTH_CONFIG=auth_config(token))
    check_equation(res)
    assert all(p.get("api_key") == token for path, p, _ in portal.log)
    assert all("X-Api-Key" not in h for _, _, h in portal.log)
    assert_nowhere(token, everything_written(res, tmp_path))


# ------------------------------------------------------------------ 10-11. damaged and shared caches
def test_a_damaged_cache_page_is_fetched_again(run_alg, http_server, tmp_path):
    url = http_server(Portal().handle)
    first = fetch(run_alg, url, tmp_path, PAGE_SIZE=60)
    pages = sorted((tmp_path / "cache").rglob("page_00001.json"))
    assert pages
    data = pages[0].read_bytes()
    pages[0].write_bytes(data[: len(data) * 2 // 3])  # cut short, as a full disk or a crash would
    again = fetch(run_alg, url, tmp_path, PAGE_SIZE=60)
    assert (again["FETCHED"], again["KEPT"]) == (first["FETCHED"], first["KEPT"])
    assert "damaged" in "\n".join(again["_feedback"].messages)


def test_two_fetches_sharing_a_cache_folder(tmp_path):
    """Two runs writing the same pages at once (as two QGIS windows would) neither crash nor mix pages."""
    from civic311.processing.core.portals import PageCache, Query, Socrata, fetch_all

    rows = [{"sr_number": f"R{i:05d}", "created_date": f"2024-01-{1 + i % 28:02d}T10:00:00"} for i in range(3000)]

    def http(url, params):
        offset, limit = int(params["$offset"]), int(params["$limit"])
        time.sleep(0.001)
        return rows[offset:offset + limit]

    results, errors = [], []

    def one_run():
        try:
            client = Socrata(Query("http://x", "abcd-1234", {"created_at": "created_date"}, page_size=25))
            cache = PageCache(tmp_path, "same-key")
            results.append(fetch_all(client, datetime(2024, 1, 1), datetime(2024, 2, 1), http, cache,
                                     lambda: False))
        except Exception as err:  # noqa: BLE001 - the test reports it
            errors.append(err)

    threads = [threading.Thread(target=one_run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(len(r) == 3000 for r in results)
    assert not list(tmp_path.rglob("*.part"))
    client = Socrata(Query("http://x", "abcd-1234", {"created_at": "created_date"}, page_size=25))
    again = fetch_all(client, datetime(2024, 1, 1), datetime(2024, 2, 1), lambda u, p: pytest.fail("refetched"),
                      PageCache(tmp_path, "same-key"), lambda: False)
    assert [r["sr_number"] for r in again] == [r["sr_number"] for r in rows]


# ------------------------------------------------------------------ 12. gzip bombs, drips, Cancel in a body
def test_a_gzip_bomb_is_capped(run_alg, http_server, tmp_path, monkeypatch):
    import civic311.processing.network as network

    monkeypatch.setattr(network, "MAX_BODY_BYTES", 4 * 1024 * 1024)
    portal = Portal(gzip_bomb=64 * 1024 * 1024)  # 64 MiB of JSON in about 64 KiB
    with pytest.raises(QgsProcessingException, match="more than 4 MiB"):
        fetch(run_alg, http_server(portal.handle), tmp_path)
    assert len(portal.log) == 1  # refused, not retried
    assert not list((tmp_path / "cache").rglob("page_*.json"))


def test_a_dripping_server_cannot_outrun_the_timeout(run_alg, http_server, tmp_path):
    portal = Portal(drip_once=8.0)
    t0 = time.monotonic()
    res = fetch(run_alg, http_server(portal.handle), tmp_path, TIMEOUT=1.5)
    assert time.monotonic() - t0 < 7  # the drip was cut at 1.5 s and fetched again
    check_equation(res)
    assert "longer than the time limit" in "\n".join(res["_feedback"].messages)


def test_cancel_is_honoured_while_a_body_arrives(run_alg, http_server, tmp_path):
    class CancelSoon(QgsProcessingFeedback):
        messages: list = []

    feedback = CancelSoon()
    threading.Timer(1.0, feedback.cancel).start()
    portal = Portal(drip_once=20.0)
    t0 = time.monotonic()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        fetch(run_alg, http_server(portal.handle), tmp_path, TIMEOUT=60, feedback=feedback)
    assert time.monotonic() - t0 < 4


# ------------------------------------------------------------------ 13-14. secrets stay with the configured host
@pytest.mark.parametrize("api", ["socrata", "open311", "arcgis"])
def test_a_redirect_to_another_host_carries_no_token(run_alg, http_server, tmp_path, api):
    token = "Tok+en/Sec=ret"
    target = Portal(token=token if api != "open311" else None)
    other = http_server(target.handle).replace("127.0.0.1", "localhost")  # another host
    portal = Portal(redirect_to=other)
    url = http_server(portal.handle)
    cfg = auth_config(token)
    try:
        if api == "socrata":
            fetch(run_alg, url, tmp_path, AUTH_CONFIG=cfg, RETRIES=0)
        elif api == "open311":
            open311(run_alg, url, tmp_path, AUTH_CONFIG=cfg, RETRIES=0)
        else:
            fetch(run_alg, url, tmp_path, api=3, dataset=url + "/arcgis/rest/services/311/FeatureServer/0",
                  FIELD_MAP=ARCGIS_MAP, AUTH_CONFIG=cfg, RETRIES=0)
    except QgsProcessingException as err:
        assert_nowhere(token, str(err))
    assert target.log, "the redirect was followed"
    for path, params, headers in target.log:
        assert_nowhere(token, json.dumps([path, params, headers]))
    first = portal.log[0]
    assert token in json.dumps([first[1], first[2]])  # the configured host did receive it


def test_percent_encoded_tokens_never_appear_in_messages(run_alg, tmp_path):
    token = "Tok+en/Sec=ret"
    cfg = auth_config(token)
    feedback_messages = []

    class Recording(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802
            feedback_messages.append(info)

    dead = "http://127.0.0.1:9/arcgis/rest/services/311/FeatureServer/0"  # nothing listens: connection errors
    with pytest.raises(QgsProcessingException) as err:
        fetch(run_alg, "http://127.0.0.1:9", tmp_path, api=3, dataset=dead, FIELD_MAP=ARCGIS_MAP, AUTH_CONFIG=cfg,
              RETRIES=1, feedback=Recording())
    assert "retrying" in "\n".join(feedback_messages)
    assert_nowhere(token, str(err.value), "\n".join(feedback_messages))


def test_unit_scrub_covers_every_encoding():
    from civic311.processing.network import scrub

    token = "a b+c/d=é"
    text = " | ".join(forms(token))
    assert_nowhere(token, scrub(text, (token,)))


# ------------------------------------------------------------------ 15. webhook secrets
def test_webhook_secrets_stay_out_of_messages_metadata_and_history(run_alg, http_server, tmp_path):
    from qgis.core import QgsProcessingContext, QgsVectorLayer
    from test_trends import grid_zones, requests_layer

    def refuse(req):
        return 500, {"Content-Type": "text/plain"}, b"down"

    base = http_server(refuse)
    secret_url = base.replace("http://", "http://hookuser:hookpass@") + "/hooks/T0/B1/SECRETKEY?sig=abc123xyz"
    out = tmp_path / "trends.gpkg"
    spiky = requests_layer(lambda i, j, w: 6, extra=[(2, 1, 19, 30, "Rodent")])
    params = {"REQUESTS": spiky, "ZONES": grid_zones(), "ZONE_ID_FIELD": "zone", "INTERVAL": 1, "BASELINE": 8,
              "SPIKE_Z": 3, "WEBHOOK_URL": secret_url, "WEBHOOK_TIMEOUT": 0.5, "OUTPUT": str(out),
              "TABLE": "memory:"}
    res = run_alg("civic311:categorytrends", params)
    messages = "\n".join(res["_feedback"].messages)
    assert "could not be delivered" in messages
    layer = QgsVectorLayer(f"{out}|layername=trends", "t", "ogr")
    written = messages + layer.metadata().abstract() + out.read_bytes().decode("latin-1")
    for secret in ("hookpass", "hookuser", "SECRETKEY", "abc123xyz"):
        assert secret not in written, secret
    # through an auth configuration the URL is in no parameter, so not in the Processing history either
    cfg = auth_config(secret_url, "webhook")
    alg = QgsApplication.processingRegistry().algorithmById("civic311:categorytrends")
    with_auth = {**params, "WEBHOOK_URL": "", "WEBHOOK_AUTH": cfg, "OUTPUT": str(tmp_path / "t2.gpkg")}
    history = alg.asPythonCommand(with_auth, QgsProcessingContext())
    res2 = run_alg("civic311:categorytrends", with_auth)
    text2 = history + "\n".join(res2["_feedback"].messages)
    assert "could not be delivered" in text2  # the URL from the auth database was used
    for secret in ("hookpass", "SECRETKEY", "abc123xyz"):
        assert secret not in text2, secret


# ------------------------------------------------------------------ 16. QGIS proxy and its exclusions
def test_proxy_exclusions_are_honoured(run_alg, http_server, tmp_path):
    from qgis.core import QgsSettings

    from civic311.processing.network import bypasses_proxy, make_session, proxies_for

    portal = Portal()
    proxy = http_server(portal.handle)  # a proxy that serves the portal for any absolute URL it is asked for
    port = proxy.rsplit(":", 1)[1]
    s = QgsSettings()
    try:
        s.setValue("proxy/proxyEnabled", True)
        s.setValue("proxy/proxyType", "HttpProxy")
        s.setValue("proxy/proxyHost", "127.0.0.1")
        s.setValue("proxy/proxyPort", port)
        s.setValue("proxy/noProxyUrls", ["http://excluded.invalid", "intranet.example"])
        # not excluded: through the proxy
        res = fetch(run_alg, "http://portal.invalid", tmp_path / "a", RETRIES=0)
        assert res["KEPT"] == expected_counts(ALL_ROWS, *month_range())[1]
        assert portal.log
        # excluded: direct, never through the proxy (the name does not resolve here, so the fetch fails)
        portal.log.clear()
        with pytest.raises(QgsProcessingException):
            fetch(run_alg, "http://excluded.invalid", tmp_path / "b", RETRIES=0)
        assert not portal.log
        session = make_session()
        assert proxies_for(session, "https://data.intranet.example/x") == {"http": None, "https": None,
                                                                            "all": None}
        assert proxies_for(session, "https://data.cityofchicago.org/x") is None  # the session's proxy
        assert bypasses_proxy("http://127.0.0.5:8080/", []) and bypasses_proxy("http://[::1]/", [])
    finally:
        s.setValue("proxy/proxyEnabled", False)
        s.remove("proxy/noProxyUrls")


def test_custom_fetch_guesses_no_xy_crs(run_alg, http_server, tmp_path):
    """Chicago-like column names do not pull in Chicago's state-plane CRS: without XY_CRS the X/Y-only row is
    rejected as unlocated, with XY_CRS it is located."""
    url = http_server(Portal().handle)
    without = fetch(run_alg, url, tmp_path / "a", XY_CRS=None)
    reasons = {f["raw_id"]: f["reject_reason"] for f in without["REJECTED"].getFeatures()}
    assert reasons["SR24-000009"] == "only projected X/Y coordinates (set XY_CRS)"
    with_crs = fetch(run_alg, url, tmp_path / "b")
    assert "SR24-000009" in ids(with_crs)


def test_an_html_page_with_http_200_is_retried_then_a_clear_error(run_alg, http_server, tmp_path):
    """A portal's maintenance page served as HTTP 200: fetched again like a 5xx, then an error that says what came
    back (never an empty layer)."""
    served = []

    def maintenance(req):
        served.append(req.path)
        return 200, {"Content-Type": "text/html"}, b"<html><body>Down for maintenance</body></html>"

    with pytest.raises(QgsProcessingException, match="not valid JSON"):
        fetch(run_alg, http_server(maintenance), tmp_path, RETRIES=2)
    assert len(served) == 3  # the first try and two retries
