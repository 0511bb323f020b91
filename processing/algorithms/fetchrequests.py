# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:fetchrequests — fetch 311 service requests from a city portal."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from qgis.core import (
    QgsApplication,
    QgsAuthMethodConfig,
    QgsCoordinateReferenceSystem,
    QgsProcessingException,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core.infer import SAMPLE_ROWS
from ..core.normalise import COORDINATE_KEYS, MAP_KEYS, MissingRoleError, SeenIds, detect_schema, normalise
from ..core.portals import API_KEYS, API_NAMES, CLIENTS, PageCache, PortalError, Query, fetch_all, query_key
from ..gpkgwriter import produced_ahead
from ..network import NetworkError, make_session, request, scrub
from ..presets import PROBLEMS, load_presets
from ..requestio import (
    STREAM_CHUNK,
    RequestStream,
    check_timezone,
    columns_with_samples,
    coordinate_numbers,
    locate_xy,
    parse_field_map,
    records_frame,
)
from ._zonal import advanced
from .base import Civic311Algorithm
from .importrequests import (
    NORMALISED_HELP,
    REQUEST_OUTPUT_FIELDS,
    add_count_outputs,
    add_request_sinks,
    report_mapping,
)


def auth_secret(auth_id: str) -> tuple[str, str]:
    """(kind, secret) from a QGIS authentication configuration: an API-header config (QGIS >= 3.28; the first
    header's value) or a Basic config whose password is the token. The secret never leaves this process."""
    if not auth_id:
        return "", ""
    manager = QgsApplication.authManager()
    cfg = QgsAuthMethodConfig()
    if not manager.loadAuthenticationConfig(auth_id, cfg, True) or not cfg.isValid(True):
        raise QgsProcessingException(f"Authentication configuration {auth_id} could not be loaded (is the master "
                                     "password set?).")
    method = cfg.method()
    if method == "APIHeader":
        values = [v for k, v in cfg.configMap().items() if v]
        if values:
            return "header", values[0]
    if method == "Basic":
        return "basic", cfg.config("password")
    raise QgsProcessingException(f"Authentication method {method} is not supported: use an API header "
                                 "configuration, or a Basic one whose password is the token.")


class FetchRequests(Civic311Algorithm):
    NAME = "fetchrequests"
    DISPLAY_NAME = "Fetch 311 service requests"
    GROUP = "fetch"
    TAGS = ('socrata', 'open311', 'seeclickfix', 'arcgis', 'ckan', 'download')
    OUTPUT_FIELDS = REQUEST_OUTPUT_FIELDS

    def __init__(self):
        super().__init__()
        self.presets = load_presets()

    HELP_HEAD = (
        "Downloads 311 service requests from a city's open-data portal into one normalised point layer "
        "(EPSG:4326).\n\n"
        "PRESET supplies the portal (API, URL, dataset, field map, time zone, area) for a city; 'Custom' uses "
        "API, BASE_URL, DATASET and FIELD_MAP. Presets live in resources/presets.json; add your own in "
        "<QGIS profile>/civic311/presets.json.\n"
        "APIs: Socrata SODA (BASE_URL = https://host, DATASET = the 4x4 id; date windows paged with "
        "$order=<date>,:id), Open311 GeoReport v2 (BASE_URL = the endpoint, DATASET = jurisdiction_id or empty; "
        "monthly windows, page/page_size; windows the server will not page are split), SeeClickFix v2 "
        "(BASE_URL = https://seeclickfix.com/api/v2, DATASET = place_url; following metadata.pagination), "
        "ArcGIS FeatureServer (DATASET = the layer URL; orderByFields on the object id, exceededTransferLimit, "
        "HTTP-200 error bodies), CKAN DataStore (DATASET = resource id; sort=_id, the server's clamped limit; "
        "dates and categories are filtered locally).\n"
        "START_DATE/END_DATE: requests created on or after the start day and before the day after the end day, "
        "in the city's local time. TIMEZONE (IANA name) is that city's zone; a preset carries its own. APIs that "
        "take instants (Open311, SeeClickFix, ArcGIS) are sent the local midnights converted to UTC, and times the "
        "portal publishes with an offset or as epoch numbers are converted to local time. With no zone known, "
        "nothing is guessed: day boundaries and such times are UTC, and the log says so.\n"
        "Filters are never dropped: START_DATE/END_DATE, CATEGORIES and EXTENT are applied on the server where the "
        "API can (dates: every API but CKAN; categories: Socrata and ArcGIS when FIELD_MAP names the 'category' "
        "field; area: Socrata with a location field, ArcGIS, SeeClickFix) and always checked again locally on the "
        "rows received (CATEGORIES case-insensitively); the log says, for each filter, where it was applied and "
        "how many rows it removed locally (they are listed in REJECTED with the reason). CATEGORIES with no "
        "category column to check stops the run, naming the FIELD_MAP key to add.\n"
        "AUTH_CONFIG: a QGIS authentication configuration holding the token. Socrata receives it as the "
        "X-App-Token header, Open311 as the api_key parameter (as GeoReport v2 specifies), ArcGIS as the token "
        "parameter, SeeClickFix as a Bearer token, CKAN as the Authorization header. Use an 'API Header' "
        "configuration where your QGIS offers it (3.28+); on QGIS 3.22, which lacks it, use a 'Basic' "
        "configuration whose password is the token (the user name is ignored). The token goes only to the host "
        "of the portal: a redirect to another host is followed without it. It never appears in logs, error "
        "messages, outputs, cache file names or project files, in any encoding.\n"
        "Open311 and SeeClickFix offer no unique sort order, so paging by page number over many requests with one "
        "timestamp would lose rows: their date windows are split until each fits one page (the server's real page "
        "size is learned when it clamps PAGE_SIZE; a page past the end that repeats an earlier one ends a window).\n"
        "TIMEOUT bounds each request from connecting to the last byte of its answer; one page may decode to at "
        "most 512 MiB.\n"
        "Trustworthy paging: retries with exponential backoff and jitter on connection errors, timeouts, 429 and "
        "5xx (honouring Retry-After), on bodies cut short and on ArcGIS 5xx errors inside HTTP-200 answers, none "
        "on other 4xx; the portal's own error message in the error. Completed "
        "pages are cached on disk (CACHE_DIR, default <QGIS profile>/civic311/cache): a failed or cancelled fetch "
        "resumes where it stopped, and a later END_DATE fetches only the new months. Each cached page carries its "
        "length and checksum and is renamed into place, so runs may share CACHE_DIR; a damaged page is fetched "
        "again (and logged). User-supplied categories "
        "and dates are quoted for SoQL/ArcGIS, so a quote cannot change the query.\n\n"
    )
    HELP = HELP_HEAD + NORMALISED_HELP

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterEnum(
            "PRESET", self.tr("City preset"), options=["Custom"] + [p["name"] for p in self.presets], defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum("API", self.tr("API (Custom)"), options=list(API_NAMES),
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterString("BASE_URL", self.tr("Portal base URL (Custom)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString(
            "DATASET", self.tr("Dataset id / resource id / layer URL / place (Custom)"), optional=True))
        self.addParameter(QgsProcessingParameterDateTime(
            "START_DATE", self.tr("Start date"), QgsProcessingParameterDateTime.Type.Date))
        self.addParameter(QgsProcessingParameterDateTime(
            "END_DATE", self.tr("End date (inclusive)"), QgsProcessingParameterDateTime.Type.Date))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr("Area"), optional=True))
        self.addParameter(QgsProcessingParameterString(
            "CATEGORIES", self.tr("Categories (comma-separated)"), optional=True))
        self.addParameter(QgsProcessingParameterString(
            "TIMEZONE", self.tr("Time zone of the city (IANA name, e.g. America/Chicago; a preset has its own)"),
            optional=True))
        self.addParameter(QgsProcessingParameterAuthConfig("AUTH_CONFIG", self.tr("Authentication (token)"),
                                                           optional=True))
        self.addParameter(advanced(QgsProcessingParameterString(
            "FIELD_MAP", self.tr("Field map (JSON: normalised field -> portal field)"), optional=True)))
        self.addParameter(advanced(QgsProcessingParameterCrs("XY_CRS", self.tr("CRS of x/y in the field map"),
                                                             optional=True)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "MAX_RECORDS", self.tr("Maximum records (0 = all)"), QgsProcessingParameterNumber.Type.Integer, 0,
            minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "PAGE_SIZE", self.tr("Page size (0 = the API's default)"), QgsProcessingParameterNumber.Type.Integer, 0,
            minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "TIMEOUT", self.tr("Read timeout per request (seconds)"), QgsProcessingParameterNumber.Type.Double, 120.0,
            minValue=0.1)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "RETRIES", self.tr("Retries per request (connection errors, timeouts, 429, 5xx)"),
            QgsProcessingParameterNumber.Type.Integer, 5, minValue=0, maxValue=20)))
        self.addParameter(advanced(QgsProcessingParameterFile(
            "CACHE_DIR", self.tr("Page cache folder"), behavior=QgsProcessingParameterFile.Behavior.Folder,
            optional=True)))
        add_request_sinks(self)
        add_count_outputs(self)

    def execute(self, parameters, context, feedback):
        import pandas as pd

        preset_index = self.parameterAsEnum(parameters, "PRESET", context)
        preset = self.presets[preset_index - 1] if preset_index > 0 else None
        for problem in PROBLEMS:
            feedback.pushWarning(problem)
        if preset:
            api, base_url, dataset = preset["api"], preset["base_url"], preset["dataset"]
            field_map = dict(preset.get("field_map", {}))
        else:
            api = API_KEYS[self.parameterAsEnum(parameters, "API", context)]
            base_url = self.parameterAsString(parameters, "BASE_URL", context).strip()
            dataset = self.parameterAsString(parameters, "DATASET", context).strip()
            field_map = {}
            if not base_url and not dataset.startswith("http"):
                raise QgsProcessingException("With the Custom preset, give BASE_URL (and DATASET).")
        field_map.update(parse_field_map(self.parameterAsString(parameters, "FIELD_MAP", context)))
        xy_crs = (preset or {}).get("xy_crs")
        if parameters.get("XY_CRS"):
            crs = self.parameterAsCrs(parameters, "XY_CRS", context)
            xy_crs = crs.authid() if crs.isValid() else xy_crs
        tz = self.parameterAsString(parameters, "TIMEZONE", context).strip() or (preset or {}).get("tz") or None
        if tz:
            check_timezone(tz)
        start_q = self.parameterAsDateTime(parameters, "START_DATE", context)
        end_q = self.parameterAsDateTime(parameters, "END_DATE", context)
        if not start_q.isValid() or not end_q.isValid():
            raise QgsProcessingException("Give START_DATE and END_DATE.")
        start = datetime(start_q.date().year(), start_q.date().month(), start_q.date().day())
        end = datetime(end_q.date().year(), end_q.date().month(), end_q.date().day()) + timedelta(days=1)
        if end <= start:
            raise QgsProcessingException("END_DATE is before START_DATE.")
        categories = [c.strip() for c in self.parameterAsString(parameters, "CATEGORIES", context).split(",")
                      if c.strip()]
        bbox = None
        if parameters.get("EXTENT"):
            rect = self.parameterAsExtent(parameters, "EXTENT", context, QgsCoordinateReferenceSystem("EPSG:4326"))
            if not rect.isNull() and not rect.isEmpty():
                bbox = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        kind, secret = auth_secret(self.parameterAsString(parameters, "AUTH_CONFIG", context))
        headers = {}
        token_param = None
        if secret:
            if api == "socrata":
                headers["X-App-Token"] = secret
            elif api in ("arcgis", "open311"):
                token_param = secret  # ArcGIS: token=…; Open311 (GeoReport v2): api_key=…
            elif api == "seeclickfix":
                headers["Authorization"] = f"Bearer {secret}"
            else:
                headers["Authorization"] = secret
        query = Query(base_url, dataset, field_map, categories, bbox,
                      self.parameterAsInt(parameters, "PAGE_SIZE", context),
                      (preset or {}).get("location_field") or field_map.get("location"), token_param, tz)
        try:
            client = CLIENTS[api](query)
        except ValueError as err:
            raise QgsProcessingException(f"FIELD_MAP: {err}") from None
        cache_dir = self.parameterAsFile(parameters, "CACHE_DIR", context) or \
            str(Path(QgsApplication.qgisSettingsDirPath()) / "civic311" / "cache")
        check_cache_dir(cache_dir)
        cache = PageCache(cache_dir, query_key(api, query), feedback.pushInfo)
        host = urlsplit(base_url if base_url else dataset).netloc or base_url
        source = f"{host}/{dataset.rsplit('/', 2)[-2] if dataset.startswith('http') else dataset}".rstrip("/")
        secrets = (secret,) if secret else ()
        session = make_session(headers, secret_headers=tuple(headers), secrets=secrets)
        fetched = [0]

        retries = self.parameterAsInt(parameters, "RETRIES", context)
        limit = self.parameterAsDouble(parameters, "TIMEOUT", context)
        timeout = (min(10.0, limit), limit)

        last_raw: list = [None]
        decoded: list = [None]

        def decode(response):
            """The JSON body (kept for http) or the problem that makes the answer worth fetching again."""
            try:
                try:
                    decoded[0] = json.loads(response.content)  # bytes: the encoding is detected, no decoded copy
                    # plain UTF-8 JSON: the page cache can store it as received
                    last_raw[0] = response.content if json.detect_encoding(response.content) == "utf-8" else None
                except UnicodeDecodeError:
                    decoded[0], last_raw[0] = response.json(), None
            except ValueError as err:
                return (f"{urlsplit(response.url).netloc} sent a response that is not valid JSON "
                        f"({len(response.content)} bytes): {str(err)[:120]}")
            return client.transient_problem(decoded[0])

        def http(url, params):
            request(session, "GET", url, feedback, params=params, secrets=secrets, timeout=timeout,
                    retries=retries, deadline=limit, check=decode)
            return decoded[0]

        def progress(n):
            fetched[0] += n
            feedback.setProgressText(f"{fetched[0]} rows fetched")

        feedback.pushInfo(f"Fetching {API_NAMES[API_KEYS.index(api)]} {source} from {start:%Y-%m-%d} to "
                          f"{end - timedelta(days=1):%Y-%m-%d}; page cache {cache.root}")
        if not tz:
            feedback.pushInfo("No time zone is known (no preset, no TIMEZONE): day boundaries are sent as UTC "
                              "and times that carry an offset are kept in UTC. Set TIMEZONE to the city's zone.")
        server = client.server_filters()
        if categories and not server["categories"]:
            feedback.pushInfo("CATEGORIES cannot be sent to this portal"
                              + ("" if api in ("open311", "seeclickfix", "ckan") else
                                 " (FIELD_MAP has no 'category')")
                              + ": every category is downloaded and filtered locally.")
        coordinates = tuple(field_map[k] for k in COORDINATE_KEYS if k in field_map)
        area = bbox or (tuple(preset["bbox"]) if preset and preset.get("bbox") else None)
        # windows are normalised and written a chunk at a time: memory holds one chunk, never the whole fetch
        state: dict = {"fmap": None, "stream": None, "first": 1, "area": area, "returned": set()}
        seen = SeenIds()

        def normalised_chunk(frames: list):
            """One chunk of pages normalised (in the normalising thread, or at the end in this one)."""
            frame = pd.concat(frames, ignore_index=True, sort=False) if len(frames) > 1 else \
                frames[0].reset_index(drop=True)
            state["returned"].update(frame.columns)
            if state["fmap"] is None:  # the first chunk settles the column roles
                for key, column in field_map.items():  # named fields a portal left out (null in every row so far)
                    if key in MAP_KEYS and column not in frame.columns:
                        frame[column] = None
                state["fmap"] = self.field_roles(frame, field_map, xy_crs, tz, categories)
            fmap = state["fmap"]
            for column in fmap.used():  # a portal leaves out keys whose values are all null in a page
                if column not in frame.columns:
                    frame[column] = None
            try:
                result = normalise(frame, fmap, source, bbox=area, categories=categories, date_range=(start, end),
                                   seen=seen, first_row=state["first"], area=state["area"])
            except ValueError as err:
                raise mapping_error(err, frame) from None
            state["first"] += len(frame)
            state["area"] = result.area
            return result

        def write(result) -> None:  # in this thread: sinks and transforms belong to the algorithm's thread
            if state["stream"] is None:
                state["stream"] = RequestStream(self, parameters, context, feedback, source, tz=tz)
            locate_xy(result, state["fmap"].xy_crs, context, bbox=area)
            state["stream"].add(result)

        def produce(hand) -> None:  # in a worker thread: pages fetched and parsed while the last are normalised
            def sink(records):
                if records:
                    hand(coordinate_numbers(records_frame(records), coordinates))

            fetch_all(client, start, end, http, cache, feedback.isCanceled, progress,
                      self.parameterAsInt(parameters, "MAX_RECORDS", context), feedback.pushInfo, sink,
                      lambda: last_raw[0])

        def normalise_all(hand) -> None:  # in a second worker thread: chunks normalised while the last are written
            pending: list = []
            rows = 0
            with closing(produced_ahead(produce)) as frames:
                for frame in frames:
                    pending.append(frame)
                    rows += len(frame)
                    if rows >= STREAM_CHUNK:
                        hand(normalised_chunk(pending))
                        pending, rows = [], 0
            if pending:
                hand(normalised_chunk(pending))

        finished = False
        try:
            with closing(produced_ahead(normalise_all)) as results:
                for result in results:
                    write(result)
            if state["stream"] is None:
                feedback.pushWarning("The portal returned no requests for this query.")
                field_map = {"request_id": "_id", "created_at": "_created", "latitude": "_lat", "longitude": "_lon",
                             "category": "_category"}
                write(normalised_chunk([pd.DataFrame({c: [] for c in field_map.values()})]))
            finished = True
        except InterruptedError:
            raise QgsProcessingException("Cancelled: the pages fetched so far are cached; run again to resume.") \
                from None
        except (PortalError, NetworkError) as err:
            message = scrub(str(err), secrets)
            if message == "Cancelled.":
                raise QgsProcessingException("Cancelled: the pages fetched so far are cached; run again to "
                                             "resume.") from None
            raise QgsProcessingException(f"{message} (pages fetched so far are cached; run again to resume)") \
                from None
        finally:
            session.close()
            if state["stream"] is not None and not finished:
                state["stream"].abort()
        stream, fmap = state["stream"], state["fmap"]
        seen.clear()  # before the spatial index is packed: the peak of memory
        never = sorted({column for key, column in field_map.items() if key in MAP_KEYS} - state["returned"])
        if never:
            feedback.pushWarning(f"FIELD_MAP names {', '.join(repr(c) for c in never)}, which the portal never "
                                 "returned: a misspelt field, or one that is empty in every row fetched.")
        report_filters(feedback, stream.reasons, server, fmap, categories, bbox)
        report_mapping(feedback, fmap, stream.unread)
        self.metadata_extra = {
            "Column mapping": "; ".join(fmap.table()),
            "Source portal": f"{API_NAMES[API_KEYS.index(api)]} {source}",
            "Query": f"created {start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d}"
                     + (f"; categories {', '.join(categories)}" if categories else "")
                     + (f"; area {bbox}" if bbox else ""),
            "Time zone": tz or "UTC (none given)",
            "Fetched at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "attribution": (preset or {}).get("attribution", f"Open data published by {host}"),
            "licence": (preset or {}).get("licence", "See the portal's terms of use"),
        }
        return stream.finish()

    def field_roles(self, frame, field_map: dict, xy_crs, tz, categories):
        """The column roles, from the first chunk of rows (FIELD_MAP and the preset's map first)."""
        if "_geom_lon" in frame.columns:
            field_map.setdefault("longitude", "_geom_lon")
            field_map.setdefault("latitude", "_geom_lat")
        try:
            fmap = detect_schema(list(frame.columns), {k: v for k, v in field_map.items()
                                                       if k in MAP_KEYS and v in frame.columns}, xy_crs,
                                 sample=frame.head(SAMPLE_ROWS))
        except ValueError as err:
            raise mapping_error(err, frame) from None
        fmap.tz = tz  # the preset's or TIMEZONE, never a guess from column names
        fmap.xy_crs = xy_crs  # the preset's or XY_CRS: a CRS is never guessed from column names either
        if categories and "category" not in fmap.columns:
            raise QgsProcessingException(
                "CATEGORIES needs a category column: add 'category' to FIELD_MAP (the portal field holding the "
                "request type).")
        return fmap


def mapping_error(err: ValueError, frame) -> QgsProcessingException:
    """What to add to FIELD_MAP when a role is missing, with the fields the portal returned."""
    if isinstance(err, MissingRoleError):
        key = "latitude' and 'longitude" if err.role == "location" else err.role
        return QgsProcessingException(f"{err} Add '{key}' to FIELD_MAP (the portal field holding it). Fields "
                                      f"returned: {columns_with_samples(frame)}")
    return QgsProcessingException(f"{err} Fields returned: {columns_with_samples(frame)}")


def check_cache_dir(path: str) -> None:
    """A clear error before any page is fetched when the cache folder cannot be written."""
    import os
    import tempfile

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise QgsProcessingException(f"CACHE_DIR {path} is a file, not a folder: choose a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".civic311-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise QgsProcessingException(f"CACHE_DIR {path} cannot be written ({err.strerror}): choose a folder you "
                                     "can write to.") from None


def report_filters(feedback, reasons: dict, server: dict, fmap, categories: list[str], bbox) -> None:
    """One line per filter the user set: where it was applied, and how many rows it removed locally."""

    def line(name, how, reason):
        removed = int(reasons.get(reason, 0))
        where = f"on the server ({how}) and checked locally" if how else "locally (the portal cannot filter it)"
        feedback.pushInfo(f"{name}: applied {where}; {removed} row(s) removed locally.")

    line("START_DATE/END_DATE", server["dates"], "outside the date range")
    if categories:
        line(f"CATEGORIES (column {fmap.columns['category']})", server["categories"], "category not requested")
    if bbox:
        line("EXTENT", server["area"], "outside the requested area")
