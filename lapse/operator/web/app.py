"""The web console (``lapse web``): Starlette, server-rendered HTML, a JSON twin for every page.

Read-only unless ``LAPSE_WEB_TOKEN`` is set; then the dead-letter bulk
actions accept a request that carries the token, either as
``Authorization: Bearer`` (an API client: no cookie, so no CSRF risk) or as
the confirmation form's ``token`` field, which must also carry the CSRF
value of the page's cookie (double submit, ``SameSite=Strict``) and come
from the console's own origin. Every page answers JSON at ``<path>.json``
or with ``?format=json``.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dramatiq
from jinja2 import Environment, FileSystemLoader, select_autoescape
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lapse.operator import dlq, status
from lapse.operator.explain import UnknownUser
from lapse.operator.web import bulk, charts, pages
from lapse.platform.config import Settings

HERE = Path(__file__).resolve().parent
CSRF_COOKIE = "lapse_csrf"
CHART_DAYS = 30


def environment() -> Environment:
    """The console's Jinja2 templates (the HTML report uses them too)."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]))
    env.filters["when"] = _when
    env.filters["seconds"] = lambda v: "-" if v is None else f"{v:.1f} s"
    env.filters["pretty"] = lambda v: json.dumps(v, default=_plain, indent=2)
    return env


def _when(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, charts.Chart):
        return value.as_json()
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


class LapseJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_plain, indent=2).encode()


def wants_json(request: Request) -> bool:
    return request.url.path.endswith(".json") or request.query_params.get("format") == "json"


class Console:
    """The console's handlers, bound to a pool, the settings, a broker and a clock.

    The handlers are plain functions: Starlette runs them in its thread pool, so a slow page
    (a leak audit) never blocks the event loop for the others.
    """

    def __init__(self, pool: ConnectionPool, config: Settings,
                 broker: Callable[[], dramatiq.Broker], now: Callable[[], datetime]) -> None:
        self.pool, self.config, self.broker, self.now = pool, config, broker, now
        self.env = environment()

    # rendering ------------------------------------------------------------
    def render(self, request: Request, template: str, data: dict[str, Any], *,
               status: int = 200, live: bool = True, refresh: int = 5) -> Response:
        """The page as HTML (its ``#live`` part polled every ``refresh`` seconds), or its JSON twin."""
        if wants_json(request):
            return LapseJSON(data, status_code=status)
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        html = self.env.get_template(template).render(
            data=data, request=request, csrf=csrf, live=live, refresh=refresh,
            self_url=_self_url(request),
            json_url=_json_url(request),
            writable=self.config.web_token is not None, now=self.now(), svg=charts.svg)
        response = HTMLResponse(html, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/")
        return response

    def problem(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "problem.html", {"error": message, "status": status},
                           status=status, live=False)

    # pages ----------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        now = self.now()
        # collect_status is handed the pool: it opens its own connection
        report = status.collect_status(self.pool, now=now, since=now - pages.NEW_DEAD_LETTERS,
                                       broker=self.broker(), config=self.config)
        with self.pool.connection() as conn:
            data = pages.overview(conn, report, now=now)
            found = pages.chart_data(conn, since=charts.default_since(now, 14), now=now,
                                     config=self.config, with_leaks=False)
        return self.render(request, "overview.html", data | {"charts": found}, refresh=15)

    def sweeps(self, request: Request) -> Response:
        with self.pool.connection() as conn:
            rows = pages.sweeps(conn, now=self.now())
        return self.render(request, "sweeps.html", {"sweeps": rows})

    def sweep(self, request: Request) -> Response:
        name = request.path_params["name"]
        with self.pool.connection() as conn:
            rows = [s for s in pages.sweeps(conn, now=self.now()) if s["name"] == name]
            if not rows:
                return self.problem(request, 404, f"no sweep called {name!r}")
            history = pages.sweep_history(conn, name)
        return self.render(request, "sweep.html", {"sweep": rows[0], "history": history})

    def dead_letters(self, request: Request) -> Response:
        try:
            flt = bulk.DeadFilter.from_params(request.query_params)
        except bulk.BadFilter as error:
            return self.problem(request, 400, str(error))
        with self.pool.connection() as conn:
            data = pages.dead_letters(conn, flt, now=self.now())
        return self.render(request, "dead_letters.html", data)

    def dead_letter(self, request: Request) -> Response:
        dead_id = request.path_params["id"]
        with self.pool.connection() as conn:
            try:
                row = pages.dead_letter(conn, dead_id)
            except dlq.DeadLetterNotFound as error:
                return self.problem(request, 404, str(error))
        return self.render(request, "dead_letter.html", {"dead_letter": row}, live=False)

    def bulk_dry_run(self, request: Request) -> Response:
        try:
            flt = bulk.DeadFilter.from_params(request.query_params)
            with self.pool.connection() as conn:
                found = bulk.dry_run(conn, request.query_params.get("action", ""), flt)
        except bulk.BadFilter as error:
            return self.problem(request, 400, str(error))
        data = {"action": found.action, "filter": flt.sql(), "filter_query": flt.query(),
                "count": found.count, "max_id": found.max_id}
        return self.render(request, "bulk_confirm.html", data, live=False)

    async def bulk_confirm(self, request: Request) -> Response:
        form = await request.form()
        return await run_in_threadpool(self._bulk_confirm, request, form)

    def _bulk_confirm(self, request: Request, form: Any) -> Response:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            flt = bulk.DeadFilter.from_params(fields)
            action = fields.get("action", "")
            counted, max_id = _count(fields.get("counted")), _count(fields.get("max_id"))
        except (bulk.BadFilter, ValueError) as error:
            return self.problem(request, 400, str(error))
        if action not in bulk.ACTIONS:
            return self.problem(request, 400, f"unknown action {action!r}")
        client = request.client.host if request.client else None
        refusal = self._refusal(request, fields)
        if refusal is not None:
            status, reason = refusal
            with self.pool.connection() as conn, conn.transaction():
                bulk.record(conn, bulk.BulkResult(action, "refused", detail=reason), flt,
                            counted=counted, counted_max_id=max_id, client=client, now=self.now())
            return self.problem(request, status, reason)
        result = bulk.confirm(self.pool, self.broker(), action, flt, counted=counted,
                              counted_max_id=max_id, client=client, now=self.now())
        data = {"action": action, "filter": flt.sql(), "filter_query": flt.query(),
                "outcome": result.outcome, "acted_ids": result.acted_ids,
                "detail": result.detail, "audit_id": result.audit_id}
        return self.render(request, "bulk_done.html", data,
                           status=200 if result.outcome == "done" else 409, live=False)

    def _refusal(self, request: Request, fields: dict[str, str]) -> tuple[int, str] | None:
        """Why this mutation is refused (status, reason), or None when it may go ahead."""
        token = self.config.web_token
        if token is None:
            return 403, "the console is read-only: LAPSE_WEB_TOKEN is not set"
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
            return None if _same(given, token) else (401, "wrong token")
        if not _same(fields.get("token", ""), token):
            return 401, "wrong or missing token"
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not _same(fields.get("csrf", ""), cookie):
            return 403, "CSRF check failed: reload the page and confirm again"
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlparse(origin).netloc != request.url.netloc:
            return 403, f"CSRF check failed: request from another origin ({origin})"
        return None

    def user(self, request: Request) -> Response:
        user_id = request.path_params["id"]
        with self.pool.connection() as conn:
            try:
                data = pages.user(conn, user_id, now=self.now(), config=self.config)
            except UnknownUser as error:
                return self.problem(request, 404, str(error))
        return self.render(request, "user.html", data)

    def find_user(self, request: Request) -> Response:
        text = request.query_params.get("id", "").strip()
        if not text.isdigit():
            return self.problem(request, 400, f"not a user id: {text!r}")
        return RedirectResponse(f"/users/{int(text)}", status_code=303)

    def charts(self, request: Request) -> Response:
        days = request.query_params.get("days", str(CHART_DAYS))
        if not days.isdigit() or not 1 <= int(days) <= 366:
            return self.problem(request, 400, f"days must be 1..366, got {days!r}")
        now = self.now()
        with self.pool.connection() as conn:
            found = pages.chart_data(conn, since=charts.default_since(now, int(days)), now=now,
                                     config=self.config)
        return self.render(request, "charts.html", {"days": int(days), "charts": found},
                           refresh=30)

    def audit(self, request: Request) -> Response:
        with self.pool.connection() as conn:
            rows = pages.audit(conn, limit=500)
        return self.render(request, "audit.html", {"audit": rows})


def _self_url(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _json_url(request: Request) -> str:
    path = request.url.path
    path = "/overview.json" if path == "/" else path + ".json"
    query = request.url.query
    return path + (f"?{query}" if query else "")


def _count(text: str | None) -> int:
    if text is None or not text.isdigit():
        raise ValueError(f"counted and max_id must be the dry run's non-negative integers, got {text!r}")
    return int(text)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _twin(path: str, endpoint: Callable[[Request], Awaitable[Response] | Response],
          methods: list[str] | None = None) -> list[Route]:
    json_path = "/overview.json" if path == "/" else path + ".json"
    # the twin first: "/sweeps/{name}" would otherwise take "lapses.json" as a name
    return [Route(json_path, endpoint, methods=methods), Route(path, endpoint, methods=methods)]


def create_app(pool: ConnectionPool, config: Settings, *,
               broker: Callable[[], dramatiq.Broker], now: Callable[[], datetime],
               allowed_hosts: list[str] | None = None) -> Starlette:
    """The console as an ASGI app; ``broker`` is called when a page measures the queues or a
    requeue or purge needs it. ``allowed_hosts``: the Host headers answered (None: any)."""
    console = Console(pool, config, broker, now)
    routes = [
        *_twin("/", console.overview),
        *_twin("/sweeps", console.sweeps),
        *_twin("/sweeps/{name:str}", console.sweep),
        *_twin("/dead-letters", console.dead_letters),
        *_twin("/dead-letters/bulk", console.bulk_dry_run, ["GET"]),
        *_twin("/dead-letters/bulk", console.bulk_confirm, ["POST"]),
        *_twin("/dead-letters/{id:int}", console.dead_letter),
        Route("/users", console.find_user),
        *_twin("/users/{id:int}", console.user),
        *_twin("/charts", console.charts),
        *_twin("/audit", console.audit),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [] if allowed_hosts is None else [
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)]
    return Starlette(routes=routes, middleware=middleware)
