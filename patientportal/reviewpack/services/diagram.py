"""The data-flow diagram, drawn from the configuration (Graphviz, through the `graphviz` package).

Every node and edge is read from the running settings and the health system's registration:
the database engine, whether Redis carries the cache and broker, the EHR's FHIR base and its
discovered OAuth endpoints, the e-mail transport, which push providers have credentials.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import graphviz
from django.conf import settings

from fhirlink.models import HealthSystem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Flow:
    source: str
    target: str
    label: str


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def diagram_model(*, health_system: HealthSystem) -> dict[str, Any]:
    """Nodes and flows as data (what the picture shows, machine-readable)."""
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    broker = urlsplit(settings.CELERY_BROKER_URL).scheme
    redis = bool(settings.REDIS_URL) or broker in {"redis", "rediss"}
    public = _host(settings.PUBLIC_BASE_URL)
    app_scheme = urlsplit(settings.PUBLIC_BASE_URL).scheme.upper()
    ehr_scheme = urlsplit(health_system.fhir_base_url).scheme.upper()
    doc = health_system.discovery or {}
    ehr_auth = _host(doc["authorization_endpoint"]) if doc.get("authorization_endpoint") else ""
    push = [
        name
        for name, configured in (
            ("FCM", bool(settings.ENGAGEMENT_FCM_PROJECT_ID)),
            ("APNs", bool(settings.ENGAGEMENT_APNS_KEY_ID)),
        )
        if configured
    ]
    email_tls = bool(settings.EMAIL_USE_TLS or settings.EMAIL_USE_SSL)
    nodes = {
        "app": "Mobile app\n(public OAuth client, PKCE)",
        "browser": "System browser\n(patient signs in at the EHR)",
        "web": f"This server (web)\n{public}",
        "worker": "Celery workers + beat\n(sync, refresh, reminders)",
        "db": f"Database ({engine})\nencrypted tokens and payloads",
        "cache": "Redis\n(cache, broker, rate limits)"
        if redis
        else f"Embedded broker/cache\n({broker})",
        "ehr": f"{health_system.name}\nFHIR R4 {_host(health_system.fhir_base_url)}",
        "email": f"E-mail (SMTP{' + TLS' if email_tls else ', no TLS'})",
        "push": f"Push providers ({', '.join(push)})"
        if push
        else "Push providers (none configured)",
    }
    flows = [
        Flow("app", "web", f"{app_scheme}: API (bearer token, scopes), OAuth 2.0 code + PKCE"),
        Flow("app", "browser", "opens authorize URL"),
        Flow(
            "browser",
            "ehr",
            "SMART authorize (state, PKCE S256, nonce, aud)"
            + (f" at {ehr_auth}" if ehr_auth else ""),
        ),
        Flow("browser", "web", "callback /fhirlink/callback (code, state)"),
        Flow("web", "ehr", f"{ehr_scheme}: discovery, token exchange, JWKS (no redirects)"),
        Flow("worker", "ehr", f"{ehr_scheme}: FHIR R4 search/read, refresh, revoke (bearer)"),
        Flow("web", "db", "SQL"),
        Flow("worker", "db", "SQL"),
        Flow("web", "cache", "cache, task queue"),
        Flow("worker", "cache", "task queue, per-EHR rate limit"),
        Flow("worker", "email", "verification, reset, reminders"),
        Flow("worker", "push", "reminders (no clinical detail)"),
    ]
    return {
        "nodes": [{"id": key, "label": label} for key, label in nodes.items()],
        "flows": [{"from": f.source, "to": f.target, "label": f.label} for f in flows],
    }


def diagram_dot(model: dict[str, Any]) -> graphviz.Digraph:
    graph = graphviz.Digraph("dataflow", graph_attr={"rankdir": "LR", "fontname": "DejaVu Sans"})
    graph.attr(
        "node",
        shape="box",
        style="rounded,filled",
        fillcolor="#eef3fb",
        fontname="DejaVu Sans",
        fontsize="10",
    )
    graph.attr("edge", fontname="DejaVu Sans", fontsize="8")
    with graph.subgraph(name="cluster_ours") as ours:
        ours.attr(label="Our deployment", style="dashed")
        for node in model["nodes"]:
            if node["id"] in {"web", "worker", "db", "cache"}:
                ours.node(node["id"], node["label"])
    for node in model["nodes"]:
        if node["id"] not in {"web", "worker", "db", "cache"}:
            graph.node(node["id"], node["label"])
    for flow in model["flows"]:
        graph.edge(flow["from"], flow["to"], label=flow["label"])
    return graph


def data_flow_diagram(*, health_system: HealthSystem) -> dict[str, Any]:
    """{nodes, flows, dot, svg (or None), error}: svg is None when Graphviz is not installed."""
    model = diagram_model(health_system=health_system)
    graph = diagram_dot(model)
    svg: str | None = None
    error = ""
    try:
        svg = graph.pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound:
        error = "Graphviz's dot is not installed (Debian package graphviz)"
        logger.warning("Review pack diagram not drawn: %s", error)
    return {**model, "dot": graph.source, "svg": svg, "error": error}
