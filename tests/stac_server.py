"""A small STAC API, SAS-token endpoint and COG file server on loopback, for offline tests.

Stdlib only (``http.server.ThreadingHTTPServer`` on 127.0.0.1 with an ephemeral port, run in a
daemon thread). It is real HTTP, so the real pystac-client, planetary-computer and GDAL/curl
talk to it unchanged:

* ``GET /`` - landing page with ``conformsTo`` (core, item-search, query, sort, fields) and
  ``rel=search`` links for POST and GET.
* ``POST /search`` and ``GET /search`` - ``collections``, ``bbox``, ``intersects`` (by its
  bounds), ``datetime``, ``query`` (lt/lte/gt/gte/eq/neq/in), ``limit`` (capped at
  :attr:`LoopbackStac.page_size`) and ``next`` paging links (POST links carry ``method`` and
  ``body``).
* ``GET /api/sas/v1/token/{account}/{container}`` - the planetary-computer SAS token request
  (point ``PC_SDK_SAS_URL`` at ``{url}/api/sas/v1/token``).
* Files with HTTP Range support (206 + ``Content-Range``, ``HEAD`` with ``Content-Length`` and
  ``Accept-Ranges``), at ``{url}/files/{name}`` and, when GDAL is told to use this server as
  its HTTP proxy (``GDAL_HTTP_PROXY``), at ``http://{account}.blob.core.windows.net/{container}/
  {name}``. The blob-style hrefs are the ones planetary-computer signs; they are only served
  with a valid, unrevoked token in the query string (403 otherwise, like Azure), so tests can
  prove that the fetcher signs late and re-signs after a 403.

Fault injection: :meth:`LoopbackStac.fail` queues responses (e.g. ``429`` with
``Retry-After``, ``503``) that the next requests of one kind (``"search"``, ``"token"``,
``"file"``) receive before normal service resumes. Every request is recorded in
:attr:`LoopbackStac.log`.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

BLOB_ACCOUNT = "s2fake"
BLOB_CONTAINER = "sentinel2-l2"
BLOB_HOST = f"{BLOB_ACCOUNT}.blob.core.windows.net"

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.0.0/item-search#fields",
]


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    kind: str  # "landing", "search", "token", "file", "other"
    path: str
    status: int
    range: str | None = None


def _parse_dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _in_range(value: str, interval: str) -> bool:
    t = _parse_dt(value)
    if "/" not in interval:
        return t == _parse_dt(interval)
    lo, hi = interval.split("/")
    return ((lo in ("", "..") or t >= _parse_dt(lo))
            and (hi in ("", "..") or t <= _parse_dt(hi)))


def _coords_bounds(geom: dict[str, Any]) -> list[float]:
    xs, ys = [], []

    def walk(c: Any) -> None:
        if isinstance(c, (list, tuple)) and c and isinstance(c[0], (int, float)):
            xs.append(c[0])
            ys.append(c[1])
        elif isinstance(c, (list, tuple)):
            for v in c:
                walk(v)

    walk(geom["coordinates"])
    return [min(xs), min(ys), max(xs), max(ys)]


def _matches_query(props: dict[str, Any], query: dict[str, Any]) -> bool:
    ops = {"lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b,
           "gte": lambda a, b: a >= b, "eq": lambda a, b: a == b, "neq": lambda a, b: a != b,
           "in": lambda a, b: a in b}
    for key, conds in query.items():
        if key not in props:
            return False
        for op, ref in conds.items():
            if not ops[op](props[key], ref):
                return False
    return True


class LoopbackStac:
    """The server. Use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, *, page_size: int = 3, search_methods: tuple[str, ...] = ("POST", "GET")):
        self.items: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.page_size = page_size
        self.search_methods = search_methods
        self.token_ttl_s = 3600.0
        self.log: list[Request] = []
        self._faults: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
        self._tokens: set[str] = set()
        self._revoked: set[str] = set()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> LoopbackStac:
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LoopbackStac:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Root URL of the STAC API (and of the plain file routes)."""
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def proxy(self) -> str:
        """``host:port`` for ``GDAL_HTTP_PROXY`` (routes blob hrefs here)."""
        return self.url.removeprefix("http://")

    @property
    def sas_url(self) -> str:
        """Value for ``PC_SDK_SAS_URL``."""
        return f"{self.url}/api/sas/v1/token"

    # ---- content -----------------------------------------------------------------------
    def add_file(self, name: str, data: bytes) -> None:
        """Serve ``data`` at :meth:`file_href` and :meth:`blob_href` of ``name``."""
        self.files[name] = data

    def file_href(self, name: str) -> str:
        """A plain loopback href (planetary-computer leaves it unsigned)."""
        return f"{self.url}/files/{name}"

    @staticmethod
    def blob_href(name: str) -> str:
        """An Azure-blob-style href (planetary-computer signs it; needs ``GDAL_HTTP_PROXY``)."""
        return f"http://{BLOB_HOST}/{BLOB_CONTAINER}/{name}"

    # ---- faults and tokens -------------------------------------------------------------
    def fail(self, kind: str, status: int, times: int = 1, **headers: str) -> None:
        """Answer the next ``times`` requests of ``kind`` with ``status`` (and headers).

        Header names use underscores for dashes: ``fail("search", 429, Retry_After="1")``.
        """
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        with self._lock:
            self._faults[kind].extend([(status, hdrs)] * times)

    def revoke_tokens(self) -> None:
        """Make every token issued so far invalid (reads with it get 403, like an expired SAS)."""
        with self._lock:
            self._revoked |= self._tokens

    def requests(self, kind: str, status: int | None = None) -> list[Request]:
        """Logged requests of one kind (and status)."""
        with self._lock:
            return [r for r in self.log
                    if r.kind == kind and (status is None or r.status == status)]

    def _pop_fault(self, kind: str) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            return self._faults[kind].pop(0) if self._faults[kind] else None

    def _issue_token(self) -> dict[str, str]:
        now = datetime.now(timezone.utc)
        expiry = now + timedelta(seconds=self.token_ttl_s)
        sig = secrets.token_hex(8)
        with self._lock:
            self._tokens.add(sig)
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        token = (f"st={now.strftime(fmt)}&se={expiry.strftime(fmt)}&sp=rl&sv=2024-05-04"
                 f"&sr=c&skoid=loopback&sig={sig}")
        return {"msft:expiry": expiry.strftime(fmt), "token": token}

    def _token_ok(self, query: str) -> bool:
        sig = parse_qs(query).get("sig", [""])[0]
        with self._lock:
            return sig in self._tokens and sig not in self._revoked

    # ---- search ------------------------------------------------------------------------
    def _search(self, params: dict[str, Any], method: str) -> dict[str, Any]:
        feats = self.items
        if params.get("collections"):
            feats = [f for f in feats if f.get("collection") in params["collections"]]
        bbox = params.get("bbox")
        if params.get("intersects"):
            bbox = _coords_bounds(params["intersects"])
        if bbox:
            w, s, e, n = bbox
            feats = [f for f in feats if not (f["bbox"][0] > e or f["bbox"][2] < w
                                              or f["bbox"][1] > n or f["bbox"][3] < s)]
        if params.get("datetime"):
            feats = [f for f in feats if _in_range(f["properties"]["datetime"], params["datetime"])]
        if params.get("query"):
            feats = [f for f in feats if _matches_query(f["properties"], params["query"])]
        feats = sorted(feats, key=lambda f: f["properties"]["datetime"], reverse=True)
        limit = min(int(params.get("limit") or self.page_size), self.page_size)
        offset = int(str(params.get("token") or "offset:0").split(":")[1])
        page = feats[offset:offset + limit]
        links: list[dict[str, Any]] = [{"rel": "root", "href": self.url + "/",
                                        "type": "application/json"}]
        if offset + limit < len(feats):
            nxt = {**params, "token": f"offset:{offset + limit}"}
            if method == "POST":
                links.append({"rel": "next", "href": self.url + "/search", "method": "POST",
                              "body": nxt, "merge": False, "type": "application/geo+json"})
            else:
                links.append({"rel": "next", "type": "application/geo+json",
                              "href": self.url + "/search?" + urlencode(_as_query(nxt))})
        return {"type": "FeatureCollection", "features": page, "links": links,
                "numberMatched": len(feats), "numberReturned": len(page)}

    def landing(self) -> dict[str, Any]:
        links = [{"rel": "self", "href": self.url + "/", "type": "application/json"},
                 {"rel": "root", "href": self.url + "/", "type": "application/json"}]
        links += [{"rel": "search", "href": self.url + "/search", "method": m,
                   "type": "application/geo+json"} for m in self.search_methods]
        return {"type": "Catalog", "id": "loopback-stac", "stac_version": "1.0.0",
                "description": "splatsr test STAC API on loopback", "conformsTo": CONFORMANCE,
                "links": links}


def _as_query(params: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        if k in ("bbox", "collections"):
            out[k] = ",".join(str(x) for x in v)
        elif isinstance(v, (dict, list)):
            out[k] = json.dumps(v)
        else:
            out[k] = str(v)
    return out


def _from_query(query: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for k, vs in parse_qs(query).items():
        v = vs[0]
        if k == "bbox":
            params[k] = [float(x) for x in v.split(",")]
        elif k in ("collections", "ids"):
            params[k] = v.split(",")
        elif k in ("query", "intersects", "fields", "sortby"):
            try:
                params[k] = json.loads(v)
            except json.JSONDecodeError:
                params[k] = v
        else:
            params[k] = v
    return params


class _Handler(BaseHTTPRequestHandler):
    app: LoopbackStac
    protocol_version = "HTTP/1.1"  # keep-alive, as GDAL/curl and requests expect
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    # ---- plumbing ----------------------------------------------------------------------
    def _target(self) -> tuple[str, str, str]:
        """(host, path, query); absolute-form targets come from proxied requests."""
        parts = urlsplit(self.path)
        host = parts.netloc or self.headers.get("Host", "")
        return host.split(":")[0], parts.path, parts.query

    def _send(self, status: int, body: bytes = b"", ctype: str = "application/json",
              headers: dict[str, str] | None = None, kind: str = "other",
              length: int | None = None) -> None:
        self.app.log.append(Request(self.command, kind, self._target()[1], status,
                                    self.headers.get("Range")))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, kind: str) -> None:
        self._send(200, json.dumps(obj).encode(), kind=kind)

    def _fault(self, kind: str) -> bool:
        fault = self.app._pop_fault(kind)
        if fault is None:
            return False
        status, headers = fault
        body = json.dumps({"code": status, "description": "injected fault"}).encode()
        self._send(status, body, headers=headers, kind=kind)
        return True

    # ---- verbs -------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self._route()

    def do_GET(self) -> None:  # noqa: N802
        self._route()

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b"{}"
        host, path, _ = self._target()
        if path.rstrip("/") != "/search" or "POST" not in self.app.search_methods:
            self._send(405 if path.rstrip("/") == "/search" else 404, b"{}")
            return
        if self._fault("search"):
            return
        try:
            params = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(400, b'{"description": "body is not JSON"}', kind="search")
            return
        self._json(self.app._search(params, "POST"), "search")

    def _route(self) -> None:
        host, path, query = self._target()
        if host.endswith(".blob.core.windows.net"):
            prefix = f"/{BLOB_CONTAINER}/"
            if host != BLOB_HOST or not path.startswith(prefix):
                self._send(404, b"", kind="file")
                return
            if self._fault("file"):
                return
            if not self.app._token_ok(query):
                body = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>'
                        b"AuthenticationFailed</Code><Message>Server failed to authenticate "
                        b"the request.</Message></Error>")
                self._send(403, body, ctype="application/xml", kind="file")
                return
            self._file(path[len(prefix):])
        elif path in ("", "/"):
            self._json(self.app.landing(), "landing")
        elif path.rstrip("/") == "/search":
            if "GET" not in self.app.search_methods:
                self._send(405, b"{}", kind="search")
            elif not self._fault("search"):
                self._json(self.app._search(_from_query(query), "GET"), "search")
        elif path.startswith("/api/sas/v1/token/"):
            if not self._fault("token"):
                self._json(self.app._issue_token(), "token")
        elif path.startswith("/files/"):
            if not self._fault("file"):
                self._file(path[len("/files/"):])
        else:
            self._send(404, b'{"description": "not found"}')

    def _file(self, name: str) -> None:
        data = self.app.files.get(name)
        if data is None:
            self._send(404, b"", kind="file")
            return
        size = len(data)
        common = {"Accept-Ranges": "bytes"}
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng else None
        if rng and not m:  # multi-range or malformed: refuse rather than guess
            self._send(416, b"", ctype="application/octet-stream",
                       headers={**common, "Content-Range": f"bytes */{size}"}, kind="file")
            return
        if m is None:
            self._send(200, data, ctype="image/tiff", headers=common, kind="file")
            return
        a, b = m.groups()
        if a == "":  # suffix range: the last b bytes
            start, end = max(size - int(b), 0), size - 1
        else:
            start, end = int(a), min(int(b) if b else size - 1, size - 1)
        if start >= size or start > end:
            self._send(416, b"", headers={**common, "Content-Range": f"bytes */{size}"},
                       kind="file")
            return
        self._send(206, data[start:end + 1], ctype="image/tiff", kind="file",
                   headers={**common, "Content-Range": f"bytes {start}-{end}/{size}"})
