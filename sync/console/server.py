"""[shell] The admin console: HTTPS with mutual TLS on a node's ``admin_address`` (aiohttp).

* **Who may see what.** The TLS layer requires a client certificate from the cluster CA
  (no certificate, or one of another CA, fails the handshake). Who the peer *is* comes from
  its ``certsync://`` SAN URI (:func:`node.identity.identity_from_certificate`), the same
  identities as the gRPC API: an ``admin`` gets every page, a ``monitor`` gets ``/metrics``
  only, a ``node`` (and a monitor on a page) gets 403, audited as ``console.refused``.
* **Pages** are read-only (``/``, ``/certificates/SHA256``, ``/requests``, ``/coverage``,
  ``/nodes``, ``/timeline``, ``/audit``), rendered by Jinja2 with autoescaping on from
  :mod:`sync.console.pages` and :mod:`sync.console.timeline`. Downloads are certificates
  only (PEM, DER, P7B); no route returns a key or a PKCS#12.
* **Headers** on every answer, errors included: a Content-Security-Policy that allows no
  script at all and styles from this origin only, ``X-Frame-Options: DENY``,
  ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff``, no referrer.
* **/metrics** answers ``metrics()`` when the composition root gives one; otherwise a
  small ``prometheus_client`` text of what the node knows itself (epoch, revision, each
  certificate's not-after).

:func:`start_console` returns ``(runner, port)``; stop it with ``await runner.cleanup()``.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import jinja2
import structlog
from aiohttp import web
from cryptography import x509

from node.errors import CertsyncError, NotFound, PermissionDenied
from node.exports import export_certificates
from node.identity import Identity, identity_from_certificate
from node.renewal_plan import CertStatus
from node.store import Store
from node.store_view import StoredCert
from sync.console import pages, timeline
from sync.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from sync.metrics import NodeMetrics
from sync.receiver import NodeStateFn
from sync.report import Observed, status_report
from sync.topology import Topology

__all__ = ["ClusterView", "ConsoleSources", "console_ssl_context", "make_app", "start_console"]

_log = structlog.get_logger("sync.console")

#: what the browser may load: nothing but this origin's stylesheet (and data: images)
CSP: Final = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
              "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_SHA_RE = re.compile(r"[0-9a-f]{64}")
#: the certificate-only downloads: format -> (export format, content type, file extension)
_DOWNLOADS: Final[Mapping[str, tuple[Literal["pem", "der", "p7b"], str, str]]] = {
    "pem": ("pem", "application/x-pem-file", "pem"),
    "der": ("der", "application/pkix-cert", "cer"),
    "p7b": ("p7b", "application/x-pkcs7-certificates", "p7b"),
}

#: the cluster as seen from this node: every node's answer and what the primary names per
#: server name (:func:`sync.cluster_view.gather`, with this node's identity)
ClusterView = Callable[[], Awaitable[tuple[list[Observed], dict[str | None, str] | None]]]


@dataclass(frozen=True)
class ConsoleSources:
    """What the console reads; all of it is read-only.

    ``statuses(now)`` is the lifecycle's view (``node.renewal.Lifecycle.statuses``);
    ``cluster`` asks every node (it may take a few seconds when nodes are down);
    ``metrics`` renders ``/metrics`` (None: a :class:`~sync.metrics.NodeMetrics` over the
    store alone).
    """

    node_name: str
    topology: Topology
    store: Store
    statuses: Callable[[dt.datetime], Awaitable[Mapping[str, CertStatus]]]
    node_state: NodeStateFn
    cluster: ClusterView
    now: Callable[[], dt.datetime]
    metrics: Callable[[], Awaitable[bytes]] | None = None


def console_ssl_context(*, ca_cert: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2+, our node identity as the server certificate, a client certificate from the
    cluster CA required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(cafile=str(ca_cert))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


_SOURCES: Final = web.AppKey("sources", ConsoleSources)
_TEMPLATES: Final = web.AppKey("templates", jinja2.Environment)
_CSS: Final = web.AppKey("css", bytes)
_IDENTITY: Final = web.RequestKey("identity", Identity)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sync.console", "templates"),
        autoescape=True,  # every value is text unless a template says otherwise (none does)
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _peer_identity(request: web.Request, cluster_id: str) -> Identity:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise PermissionDenied("no client certificate; use an admin identity of this cluster")
    return identity_from_certificate(x509.load_der_x509_certificate(der),
                                     cluster_id=cluster_id)


#: what every identity of the cluster may load: the stylesheet (a 403 page uses it too)
#: and the favicon browsers ask for on their own
_ANYONE: Final = frozenset({"/static/console.css", "/favicon.ico"})


def _allowed(identity: Identity, path: str) -> str | None:
    """Why ``identity`` may not see ``path``, or None when it may."""
    if identity.kind == "admin" or path in _ANYONE:
        return None
    if path == "/metrics" and identity.kind == "monitor":
        return None
    if identity.kind == "monitor":
        return "a monitor identity may read /metrics only"
    return "only an admin identity may see the console"


def _render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    sources = request.app[_SOURCES]
    template = request.app[_TEMPLATES].get_template(name)
    identity = request.get(_IDENTITY)
    html = template.render(
        node=sources.node_name, cluster_id=sources.topology.cluster_id, path=request.path,
        viewer=None if identity is None else f"{identity.kind}:{identity.name}", **context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    sources = request.app[_SOURCES]
    try:
        try:
            identity = _peer_identity(request, sources.topology.cluster_id)
        except PermissionDenied as err:
            raise _Refused(str(err), actor="unknown") from err
        request[_IDENTITY] = identity
        why = _allowed(identity, request.path)
        if why is not None:
            raise _Refused(why, actor=f"{identity.kind}:{identity.name}")
        response = await handler(request)
    except _Refused as refusal:
        await sources.store.record_audit(
            actor=refusal.actor, action="console.refused",
            detail={"path": request.path, "why": refusal.why}, now=sources.now())
        _log.info("console.refused", actor=refusal.actor, path=request.path)
        response = _render(request, "error.html", status=403, title="Forbidden",
                           message=f"{refusal.why}.")
    except web.HTTPException as err:
        if err.status < 400:
            raise
        response = _render(request, "error.html", status=err.status, title=err.reason,
                           message=err.text or err.reason)
    except NotFound as err:
        response = _render(request, "error.html", status=404, title="Not found",
                           message=str(err))
    except CertsyncError as err:
        response = _render(request, "error.html", status=400, title="Bad request",
                           message=str(err))
    response.headers.update(HEADERS)
    return response


class _Refused(Exception):
    def __init__(self, why: str, *, actor: str) -> None:
        super().__init__(why)
        self.why, self.actor = why, actor


# --------------------------------------------------------------------------- reading


async def _facts(sources: ConsoleSources, now: dt.datetime) -> list[pages.CertFacts]:
    view = await sources.store.view()
    statuses = await sources.statuses(now)
    out = []
    for stored in view.certs:
        chain, problems = view.chain(stored.sha256)
        status = statuses.get(stored.sha256)
        out.append(pages.CertFacts(
            stored=stored, chain=tuple(c for c in chain if c != stored.certificate()),
            chain_problems=problems,
            renewal_state=None if status is None else status.renewal_state,
            replaceable=None if status is None else status.replaceable,
            days_left=None if status is None else status.days_left,
        ))
    return out


def _sha_of(request: web.Request) -> str:
    sha = request.match_info["sha256"].lower()
    if not _SHA_RE.fullmatch(sha):
        raise web.HTTPNotFound(text=f"{sha!r} is not a certificate SHA-256 (64 hex digits)")
    return sha


async def _stored(sources: ConsoleSources, sha: str) -> StoredCert:
    view = await sources.store.view()
    stored = view.get(sha)
    if stored is None:
        raise web.HTTPNotFound(text=f"no certificate {sha} in this node's store")
    return stored


# --------------------------------------------------------------------------- pages


async def certificates_page(request: web.Request) -> web.Response:
    sources = request.app[_SOURCES]
    now = sources.now()
    rows = pages.certificate_rows(await _facts(sources, now), now=now)
    return _render(request, "certificates.html", title="Certificates", certificates=rows)


async def certificate_page(request: web.Request) -> web.Response:
    sources = request.app[_SOURCES]
    sha = _sha_of(request)
    await _stored(sources, sha)
    now = sources.now()
    facts = await _facts(sources, now)
    found = next(f for f in facts if f.stored.sha256 == sha)
    observed, _ = await sources.cluster()
    served_by = [o.name for o in observed if sha in o.served.values()]
    detail = pages.certificate_detail(
        found, required=sources.topology.required_names(), served_by=served_by, now=now,
        roles={f.stored.sha256: f.stored.role for f in facts})
    return _render(request, "certificate.html", title=detail["name"], cert=detail)


async def download(request: web.Request) -> web.Response:
    sources = request.app[_SOURCES]
    sha = _sha_of(request)
    download_as = _DOWNLOADS.get(request.match_info["fmt"])
    if download_as is None:
        raise web.HTTPNotFound(text=f"no download format {request.match_info['fmt']!r}; use "
                               "pem, der or p7b")
    fmt, content_type, ext = download_as
    stored = await _stored(sources, sha)
    chain, _ = (await sources.store.view()).chain(sha)
    cert = stored.certificate()
    certs = [cert, *(c for c in chain if c != cert)]
    body = export_certificates(certs, fmt)
    filename = re.sub(r"[^A-Za-z0-9._-]+", "_", stored.name).strip("._") or sha[:16]
    return web.Response(body=body, content_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{filename}.{ext}"'})


async def requests_page(request: web.Request) -> web.Response:
    sources = request.app[_SOURCES]
    rows = pages.request_rows(await sources.store.list_csrs(),
                              await sources.store.list_certificates())
    return _render(request, "requests.html", title="Certificate requests", requests=rows)


async def coverage_page(request: web.Request) -> web.Response:
    sources = request.app[_SOURCES]
    observed, expected = await sources.cluster()
    default = (await sources.store.view()).default
    matrix = pages.coverage_matrix(sources.topology, default, observed, expected)
    return _render(request, "coverage.html", title="Coverage", matrix=matrix)


async def nodes_page(request: web.Request) -> web.Response:
    sources = request.app[_SOURCES]
    observed, expected = await sources.cluster()
    report = status_report(sources.topology, observed, expected, now=sources.now())
    return _render(request, "nodes.html", title="Nodes", report=report,
                   nodes=pages.node_rows(report))


async def timeline_page(request: web.Request) -> web.Response:
    sources = request.app[_SOURCES]
    now = sources.now()
    spans = [
        timeline.Span(sha256=s.sha256, name=s.name,
                      not_before=s.certificate().not_valid_before_utc,
                      not_after=s.not_after, default=s.is_default)
        for s in (await sources.store.view()).certs
    ]
    return _render(request, "timeline.html", title="Expiry timeline",
                   chart=timeline.timeline(spans, now=now))


def _page_number(text: str | None) -> int:
    if text is None or text == "":
        return 1
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise web.HTTPBadRequest(text=f"page {text!r} is not a page number (1, 2, ...)")
    return int(text)


async def audit_page(request: web.Request) -> web.Response:
    sources = request.app[_SOURCES]
    actor = request.query.get("actor", "").strip() or None
    action = request.query.get("action", "").strip() or None
    page = _page_number(request.query.get("page"))
    size = pages.AUDIT_PAGE_SIZE
    events = await sources.store.audit_log(size + 1, offset=(page - 1) * size,
                                           actor=actor, action=action)
    return _render(request, "audit.html", title="Audit log",
                   events=pages.audit_rows(events[:size]), page=page,
                   has_next=len(events) > size, actor=actor or "", action=action or "")


async def metrics_page(request: web.Request) -> web.Response:
    sources = request.app[_SOURCES]
    render = sources.metrics or NodeMetrics(store=sources.store).render
    return web.Response(body=await render(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_CSS], content_type="text/css", charset="utf-8")


def make_app(sources: ConsoleSources) -> web.Application:
    """The aiohttp application (routes, guard, templates) over ``sources``."""
    app = web.Application(middlewares=[_guard], client_max_size=64 * 1024)
    app[_SOURCES] = sources
    app[_TEMPLATES] = _environment()
    app[_CSS] = resources.files("sync.console").joinpath("static/console.css").read_bytes()
    routes: Sequence[tuple[str, Callable[[web.Request], Awaitable[web.Response]]]] = (
        ("/", certificates_page),
        ("/certificates/{sha256}", certificate_page),
        ("/certificates/{sha256}/download/{fmt}", download),
        ("/requests", requests_page),
        ("/coverage", coverage_page),
        ("/nodes", nodes_page),
        ("/timeline", timeline_page),
        ("/audit", audit_page),
        ("/metrics", metrics_page),
        ("/static/console.css", stylesheet),
        ("/favicon.ico", favicon),
    )
    for path, handler in routes:
        app.router.add_get(path, handler, allow_head=True)
    return app


async def start_console(
    sources: ConsoleSources, *, host: str, port: int, ssl_context: ssl.SSLContext
) -> tuple[web.AppRunner, int]:
    """Listen on ``host``:``port`` (port 0 picks one) and return ``(runner, port)``."""
    runner = web.AppRunner(make_app(sources), access_log=None, handle_signals=False,
                           shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound = int(runner.addresses[0][1])
    _log.info("console.started", node=sources.node_name, port=bound)
    return runner, bound
