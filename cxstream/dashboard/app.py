"""The dashboard web app (Starlette): JSON API, server-sent events, local static assets.

Routes (all behind the token when auth is on; the token comes as ``Authorization: Bearer ...``, or
once as ``?token=...``, which sets an HttpOnly cookie):

* ``GET /`` — the page; ``GET /static/...`` — its assets (served locally, no CDN);
* ``GET /api/overview`` — incidents, cells, degraded customers, actions, health;
* ``GET /api/events`` — server-sent events: the overview again whenever it changed, and the
  health line alone (``event: health``) whenever only it did;
* ``GET /api/customers?q=...`` and ``GET /api/customers/{id}`` — search and a customer's whole
  story (profile, consent, churn risk with its reasons, experience, alerts, incidents, contacts,
  offers, outcomes);
* ``GET /api/incidents`` — the cell incidents with their value at risk in money and each
  affected customer's churn probability and expected loss; ``GET /api/incidents/{id}`` — one
  of them, each affected customer with their value tier too (what the page unfolds);
* ``GET /api/openapi.json`` — the OpenAPI description of these endpoints;
* ``POST /api/incidents/{id}/ack`` (``{"user": ...}``) and ``.../resolve`` — recorded and
  published on the alarm-updates topic as a TMF642 event whose ``alarm`` has the alarm's id and
  the ``Alarm_Update`` fields that changed; the flow consumes it (a resolve closes the incident).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import redis
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cxstream.context import ContextStore
from cxstream.dashboard.auth import ROLES, Identity, Sessions, Users, allowed
from cxstream.dashboard.openapi import OPENAPI
from cxstream.dashboard.peers import Peers, figures, worst
from cxstream.dashboard.risk import RiskView
from cxstream.dashboard.state import DashboardState
from cxstream.errors import ServiceError
from cxstream.events import is_id, utcnow

__all__ = ["create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# (topic, key, value); raises ServiceError when Kafka did not take the record
Publish = Callable[[str, bytes, bytes], None]


def _same(given: str, token: str) -> bool:
    """Constant-time comparison of any string (a non-ASCII one is simply not the token)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())


_PUBLIC = frozenset({"/login", "/static/login.js", "/static/app.css"})
_CSRF_COOKIE = "cx_csrf"


class _Auth(BaseHTTPMiddleware):
    """Who is asking, and may they (see :mod:`cxstream.dashboard.auth`); commands need the
    anti-forgery header unless they come with a bearer token."""

    def __init__(
        self,
        app: Any,
        *,
        token: str | None,
        users: Users | None,
        sessions: Sessions,
        proxy_user_header: str | None,
        proxy_role_header: str | None,
        open_access: bool,
    ) -> None:
        super().__init__(app)
        self._token = token
        self._users = users
        self._sessions = sessions
        self._proxy_user = proxy_user_header
        self._proxy_role = proxy_role_header
        self._open = open_access

    def _identify(self, request: Request) -> Identity | None:
        header = request.headers.get("authorization", "")
        if self._token is not None and header.startswith("Bearer "):
            given = header.removeprefix("Bearer ").strip()
            return Identity(None, "operator", "bearer") if _same(given, self._token) else None
        session = request.cookies.get("cx_session")
        if session:
            found = self._sessions.read(session)
            if found is not None:
                return found
        if self._proxy_user is not None:
            user = request.headers.get(self._proxy_user, "").strip()[:64]
            if user:
                role = request.headers.get(self._proxy_role or "", "").strip().lower()
                return Identity(user, role if role in ROLES else "viewer", "proxy")
        cookie = request.cookies.get("cx_token")
        if self._token is not None and cookie is not None and _same(cookie, self._token):
            return Identity(None, "operator", "token")
        if self._open:
            return Identity(None, "operator", "open")
        return None

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if path in _PUBLIC:
            return await call_next(request)
        given = request.query_params.get("token")
        if self._token is not None and given is not None and _same(given, self._token):
            response = RedirectResponse(path or "/", status_code=303)
            response.set_cookie("cx_token", given, httponly=True, samesite="strict")
            _set_csrf(response, secrets.token_urlsafe(24))
            return response
        identity = self._identify(request)
        if identity is None:
            if self._users is not None and request.method == "GET" and path == "/":
                return RedirectResponse("/login", status_code=303)
            return JSONResponse({"error": "authentication required"}, status_code=401)
        if not allowed(identity.role, request.method, path):
            return JSONResponse(
                {"error": f"the {identity.role} role may not do this"}, status_code=403
            )
        if request.method == "POST" and identity.via != "bearer":
            sent = request.headers.get("x-csrf-token", "")
            expected = identity.csrf or request.cookies.get(_CSRF_COOKIE) or ""
            if not sent or not expected or not _same(sent, expected):
                return JSONResponse(
                    {"error": "missing or wrong X-CSRF-Token header"}, status_code=403
                )
        request.state.identity = identity
        answer = await call_next(request)
        if identity.via in ("open", "proxy", "token") and not request.cookies.get(_CSRF_COOKIE):
            _set_csrf(answer, secrets.token_urlsafe(24))
        return answer


def _set_csrf(response: Response, value: str) -> None:
    """The anti-forgery cookie the page's script echoes in ``X-CSRF-Token`` (readable by the
    page, so not HttpOnly; SameSite=Strict, so never sent by another site)."""
    response.set_cookie(_CSRF_COOKIE, value, httponly=False, samesite="strict")


_OFFER_KINDS = ("service_credit", "retention_offer")


def _story(
    data: dict[str, Any], profile: dict[str, Any] | None, figures: dict[str, Any] | None
) -> dict[str, Any]:
    """A customer's whole story for care agents and other systems (the keys of
    ``GET /api/customers/{id}``), beside what the page showed before (``summary``,
    ``decisions``, ``actions``, ``history``)."""
    contacts = data["decisions"]
    summary = data["summary"] or {}
    return {
        **data,
        "consent": None
        if profile is None
        else {
            "channels": profile.get("consent", {}),
            "changed_at": data.get("consent_changes", {}),  # per channel: when it was last set
            "updated_at": profile.get("consent_updated"),
        },
        "churn": None
        if not figures or figures.get("churn_probability") is None
        else {
            "probability": figures["churn_probability"],
            "explanation": figures["reasons"],
            "scored_at": figures["scored_at"],
            "trend": figures.get("trend", []),  # [scored_at, probability], oldest first
            "value": figures["value"],
            "expected_loss": figures["expected_loss"],
        },
        "experience": {
            "index": summary.get("experience_index"),
            "history": data["history"],
        },
        "contacts": contacts,
        "offers": [
            {**d, "accepted": any(o["outcome"] == "offer_accepted" for o in data["outcomes"])}
            for d in contacts
            if d.get("kind") in _OFFER_KINDS
        ],
        "tickets": {"open": profile.get("open_tickets", 0) if profile else None},
    }


KAFKA_SILENT_SHOWN_S = 10.0
"""An input broker silent this long is shown: a consumer's fetch is answered at least every
``fetch.wait.max.ms`` (250 ms at most as shipped)."""


class _Health:
    """Events per second (over the last ``window_s``), lag, dead letters, webhook failures,
    whether the flow keeps up (``cxstream_flow_health``) and, once it is
    :data:`KAFKA_SILENT_SHOWN_S` or more, how long its input's broker has not answered
    (``cxstream_kafka_input_silent_seconds``): this process's, and in a cluster (``peers``) the
    whole cluster's: counts and lags summed, the worst state, the longest silence, and the
    processes whose figures could not be read named (``unanswered``)."""

    def __init__(
        self,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        peers: Peers | None = None,
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._peers = peers
        self._done: dict[int, deque[tuple[float, float]]] = {}

    def read(self) -> dict[str, Any]:
        processes = {0: figures(REGISTRY.collect())}
        unanswered: list[int] = []
        if self._peers is not None:
            fresh, unanswered = self._peers.read()
            processes.update(fresh)
        done: dict[str, float] = {}
        for f in processes.values():
            for outcome, value in f.done.items():
                done[outcome] = done.get(outcome, 0.0) + value
        rates = [r for i, f in processes.items() if (r := self._rate(f.done, i)) is not None]
        silent = max(f.silent_s for f in processes.values())
        return {
            "events_per_s": round(sum(rates), 1) if rates else None,
            "processed": done.get("processed", 0.0),
            "dead_letters": done.get("dead_letter", 0.0),
            "webhook_delivered": done.get("webhook_delivered", 0.0),
            "webhook_failed": done.get("webhook_failed", 0.0),
            "lag": sum(f.lag for f in processes.values()),
            "state": worst(f.state for f in processes.values()),
            "kafka_silent_s": round(silent) if silent >= KAFKA_SILENT_SHOWN_S else None,
            "processes": 1 if self._peers is None else self._peers.processes,
            "unanswered": unanswered,
        }

    def _rate(self, values: dict[str, float], process: int = 0) -> float | None:
        """Events one process did per second over the last window: a rolling rate, steady
        between polls (None at its first read, which has nothing to compare with, and after its
        counters went back, as when it restarted)."""
        now = self._clock()
        total = values.get("processed", 0.0) + values.get("dead_letter", 0.0)
        done = self._done.setdefault(process, deque())
        if done and total < done[-1][1]:
            done.clear()
        done.append((now, total))
        while len(done) > 2 and now - done[1][0] >= self._window_s:
            done.popleft()
        (t0, first), (t1, last) = done[0], done[-1]
        return (last - first) / (t1 - t0) if t1 > t0 else None


async def _updates(
    state: DashboardState,
    overview: Callable[[], dict[str, Any]],
    health: _Health,
    update_s: float,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """The page's server-sent events, one every ``update_s``: the whole overview when the state
    changed; otherwise the health line alone when it changed, since a flow that has stalled, or
    whose Redis is down, changes nothing else (a keep-alive comment when neither did)."""
    seen, shown = -1, None
    while not await disconnected():
        if state.version != seen:
            seen = state.version
            data = await asyncio.to_thread(overview)
            shown = data["health"]
            yield b"event: overview\ndata: " + orjson.dumps(data) + b"\n\n"
        else:
            now = health.read()
            if now != shown:
                shown = now
                yield b"event: health\ndata: " + orjson.dumps({"health": now}) + b"\n\n"
            else:
                yield b": keep-alive\n\n"
        await asyncio.sleep(update_s)


def create_app(
    state: DashboardState,
    *,
    context: ContextStore | None,
    publish: Publish | None,
    updates_topic: str,
    token: str | None,
    update_s: float = 1.0,
    pseudonyms: Callable[[str], str] | None = None,
    risk: RiskView | None = None,
    users: Users | None = None,
    sessions: Sessions | None = None,
    proxy_user_header: str | None = None,
    proxy_role_header: str | None = None,
    peers: Peers | None = None,
) -> Starlette:
    """Build the app; ``publish`` sends acknowledgements to Kafka; with ``pseudonyms`` (privacy
    settings) a subscriber id typed by an agent is looked up by its pseudonym; ``risk`` gives
    churn probabilities and values (without it, value at risk is not shown); ``peers``, the other
    processes of a cluster, whose figures join this one's in the health line."""
    health = _Health(peers=peers)

    def known_as(sid: str) -> str:
        return pseudonyms(sid) if pseudonyms is not None else sid

    def overview() -> dict[str, Any]:
        """The main page's data; incidents with their value at risk, and the degraded customers
        ranked by expected loss, those recovered after them (Redis is read here: call it off
        the event loop)."""
        data = state.overview()
        data["currency"] = risk.currency if risk is not None else None
        for incident in data["incidents"]:
            ids = incident.pop("affected_ids")
            incident["value_at_risk"] = risk.incident_value(ids)[0] if risk is not None else None
        if risk is not None and data["customers"]:
            per = risk.customers([c["subscriber_id"] for c in data["customers"]])
            customers = [{**c, **per.get(c["subscriber_id"], {})} for c in data["customers"]]
            customers.sort(  # the degraded first, those recovered after them
                key=lambda c: (
                    bool(c.get("cleared_at")),
                    -((c.get("expected_loss") or {}).get("amount") or 0.0),
                )
            )
            data["customers"] = customers
        data["health"] = health.read()
        return data

    def valued(incident: dict[str, Any]) -> dict[str, Any]:
        """An incident row with its value at risk and, for each affected customer, highest
        expected loss first, their churn probability, value and expected loss (and value tier,
        where the row carries ``affected_tiers``)."""
        ids = incident.pop("affected_ids")
        tier_of = incident.pop("affected_tiers", None)
        if risk is not None:
            total, rows = risk.incident_value(ids)
        else:
            total, rows = None, [{"subscriber_id": sid} for sid in ids]
        if tier_of is not None:
            rows = [{**row, "value_tier": tier_of.get(row["subscriber_id"])} for row in rows]
        return {**incident, "value_at_risk": total, "affected": rows}

    def incidents() -> dict[str, Any]:
        """Every incident the dashboard holds, each with its value at risk and its affected
        customers' churn probability, value and expected loss."""
        return {"incidents": [valued(incident) for incident in state.incident_rows()]}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def api_overview(request: Request) -> Response:
        data = await asyncio.to_thread(overview)
        return Response(orjson.dumps(data), media_type="application/json")

    async def api_incidents(request: Request) -> Response:
        data = await asyncio.to_thread(incidents)
        return Response(orjson.dumps(data), media_type="application/json")

    async def api_incident(request: Request) -> Response:
        incident_id = request.path_params["incident_id"]
        row = state.incident_row(incident_id)
        if row is None:
            return JSONResponse({"error": f"unknown incident {incident_id}"}, status_code=404)
        data = await asyncio.to_thread(valued, row)
        return Response(orjson.dumps(data), media_type="application/json")

    async def api_openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _updates(state, overview, health, update_s, request.is_disconnected),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "")
        results = state.search(query)
        if pseudonyms is not None and query.strip():
            exact = state.search(known_as(query.strip()))
            results = exact + [r for r in results if r not in exact]
        wanted = query.strip()
        if context is not None and wanted and is_id(wanted) and wanted not in results:
            # any customer with a profile in Redis, not only those the dashboard saw
            try:
                found = await asyncio.to_thread(context.get_many, [known_as(wanted)])
            except redis.RedisError:
                found = {}
            lookup = found.get(known_as(wanted))
            if lookup is not None and lookup.customer is not None:
                results = [wanted, *results]
        return JSONResponse({"results": results})

    async def customer(request: Request) -> Response:
        sid = known_as(request.path_params["subscriber_id"])
        profile = None
        samples: list[tuple[float, float, str | None]] = []
        consent_changes: dict[str, str] = {}
        if context is not None:
            lookup = await asyncio.to_thread(context.get_many, [sid])
            found = lookup[sid].customer
            profile = found.model_dump(mode="json") if found is not None else None
            try:
                samples = await asyncio.to_thread(context.samples, sid)
                consent_changes = await asyncio.to_thread(context.consent_changes, sid)
            except redis.RedisError:
                samples = []  # Redis is down: the page still shows what the dashboard saw
        history = [(t, value) for t, value, _ in samples]
        data = state.customer(sid, [(t, cell) for t, _, cell in samples if cell])
        data["profile"] = profile
        data["history"] = history
        data["consent_changes"] = consent_changes
        if profile is None and data["summary"] is None and not data["decisions"]:
            return JSONResponse({"error": f"unknown subscriber {sid}"}, status_code=404)
        figures = (await asyncio.to_thread(risk.customers, [sid]))[sid] if risk else None
        return Response(orjson.dumps(_story(data, profile, figures)), media_type="application/json")

    async def change(request: Request) -> Response:
        incident_id = request.path_params["incident_id"]
        verb = request.path_params["verb"]
        if verb not in ("ack", "resolve"):
            return JSONResponse({"error": f"unknown operation {verb}"}, status_code=404)
        try:
            body = await request.json()
        except ValueError:
            body = {}
        identity: Identity = request.state.identity
        # a signed-in person is who they are; the shared token (demo, API clients) names its user
        user = identity.user or str(body.get("user") or "noc-operator")[:64]
        at = utcnow().isoformat()
        incident = state.incidents.get(incident_id)
        if incident is None:
            return JSONResponse({"error": f"unknown incident {incident_id}"}, status_code=404)
        # TMF642's own fields: who acknowledged (ackUserId, ackSystemId) or cleared (clearUserId,
        # clearSystemId), and when (alarmChangedTime, alarmClearedTime): the Alarm_Update that
        # the change is, with the alarm's id
        update: dict[str, Any] = {
            "id": incident_id,
            # the cell: the flow routes the command to the shard that holds its incident
            "alarmedObject": incident["alarmedObject"],
            "alarmChangedTime": at,
            "state": incident["state"] if verb == "ack" else "cleared",
            "ackState": "acknowledged"
            if verb == "ack"
            else incident.get("ackState", "unacknowledged"),
            "comment": [
                {"comment": f"{verb} by {user}", "systemId": "cxstream-dashboard", "time": at}
            ],
        }
        if verb == "ack":
            update["ackUserId"] = user
            update["ackSystemId"] = "cxstream-dashboard"
        else:
            update["clearUserId"] = user
            update["clearSystemId"] = "cxstream-dashboard"
            update["alarmClearedTime"] = at
            update["perceivedSeverity"] = "cleared"
        event = {
            "eventId": f"{incident_id}:{verb}:{at}",
            "eventTime": at,
            "eventType": "AlarmAttributeValueChangeEvent"
            if verb == "ack"
            else "AlarmStateChangeEvent",
            "event": {"alarm": update},
        }
        if publish is not None:
            try:
                await asyncio.to_thread(
                    publish,
                    updates_topic,
                    incident["alarmedObject"]["id"].encode(),
                    orjson.dumps(event),
                )
            except ServiceError as exc:  # not taken by Kafka: the flow would never hear of it
                log.warning("incident %s: %s by %s not sent: %s", incident_id, verb, user, exc)
                return JSONResponse({"error": f"not sent: {exc}; try again"}, status_code=503)
        if verb == "ack":
            state.acknowledge(incident_id, user, at)
        state.on_alarm_update(event)
        log.info("incident %s: %s by %s", incident_id, verb, user)
        return JSONResponse({"ok": True, "incident": incident_id, "by": user, "at": at})

    routes = [
        Route("/", index),
        Route("/api/overview", api_overview),
        Route("/api/incidents", api_incidents),
        Route("/api/incidents/{incident_id}", api_incident),
        Route("/api/openapi.json", api_openapi),
        Route("/api/events", events),
        Route("/api/customers", search),
        Route("/api/customers/{subscriber_id}", customer),
        Route("/api/incidents/{incident_id}/{verb:str}", change, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    sessions = sessions or Sessions()

    async def login_page(request: Request) -> Response:
        return FileResponse(STATIC / "login.html")

    async def login(request: Request) -> Response:
        if users is None:
            return JSONResponse({"error": "no users file configured"}, status_code=404)
        try:
            body = await request.json()
        except ValueError:
            body = {}
        name, password = str(body.get("user") or ""), str(body.get("password") or "")
        role = await asyncio.to_thread(users.check, name, password)
        if role is None:
            log.warning("dashboard sign-in refused for %r", name[:64])
            return JSONResponse({"error": "wrong user or password"}, status_code=401)
        cookie, csrf = sessions.issue(name, role)
        response = JSONResponse({"user": name, "role": role})
        secure = request.url.scheme == "https"
        response.set_cookie("cx_session", cookie, httponly=True, samesite="strict", secure=secure)
        _set_csrf(response, csrf)
        log.info("dashboard sign-in: %s (%s)", name, role)
        return response

    async def me(request: Request) -> Response:
        identity: Identity = request.state.identity
        return JSONResponse({"user": identity.user, "role": identity.role, "via": identity.via})

    async def logout(request: Request) -> Response:
        response = JSONResponse({"ok": True})
        response.delete_cookie("cx_session")
        return response

    routes += [
        Route("/login", login_page),
        Route("/login", login, methods=["POST"]),
        Route("/api/me", me),
        Route("/api/logout", logout, methods=["POST"]),
    ]
    auth = Middleware(
        _Auth,
        token=token,
        users=users,
        sessions=sessions,
        proxy_user_header=proxy_user_header,
        proxy_role_header=proxy_role_header,
        open_access=token is None and users is None and proxy_user_header is None,
    )
    return Starlette(routes=routes, middleware=[auth])
