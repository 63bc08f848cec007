"""The FastAPI app behind the Airflow UI's "ErfNet results" view.

It presents what ``erfnet_tasks.results`` returns and holds no SQL of its own. Authentication is
injected: ``create_app(require_user=...)`` puts that dependency on every route, so the plugin passes
Airflow's own ``get_user`` and the tests can pass the same one (with a real token) or a stand-in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from erfnet_tasks.deployment import DAG_ID, PLUGIN_PREFIX
from erfnet_tasks.errors import ErfnetError
from erfnet_tasks.records import RunStatus
from erfnet_tasks.results import db, hosts, queries
from erfnet_tasks.results import history as history_queries

from . import views

URL_PREFIX = PLUGIN_PREFIX  # the name erfnet_plugin.py mounts the app under
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
# The charting library and the page scripts, served by this app (behind the same login): the Airflow
# host may have no internet. Only these names are served, never a path taken from the request.
STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {p.name: p for p in STATIC_DIR.iterdir() if p.suffix in (".js", ".css")} if STATIC_DIR.is_dir() else {}
_MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
RUNS_SHOWN = 200  # the history page's run table, newest first within the range

# Bounds of every numeric query parameter: out of range (or past 2**63) is a 400, not a database error.
Limit = Query(50, ge=1, le=100_000)
Batch = Query(None, ge=1, le=1024)
Days = Query(None, ge=1, le=36_600)
RunsPerPage = Query(100, ge=1, le=1000)  # /api/history: 100 runs of 24 cells (500 kB) answer in under 0.1 s


class ResultsUnavailable(Exception):
    """The results database cannot be reached or read; shown as a 503 page, never a traceback."""


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class RunNotFound(ErfnetError):
    """An unknown run id, or no runs at all where one is asked for: a 404."""


@contextmanager
def _reading(resolve: Callable[[], str]) -> Iterator[Session | None]:
    """A session on the results database; None when it has no schema yet (nothing was ever published)."""
    try:
        url = resolve()
        if db.current_revision(url) is None:
            yield None
            return
        with db.session_scope(url) as session:
            yield session
    except RunNotFound:
        raise
    except (SQLAlchemyError, OSError, ErfnetError) as exc:
        raise ResultsUnavailable(_one_line(exc)) from exc


def _has_runs(session: Session | None) -> bool:
    return session is not None and queries.has_runs(session)


def _validation_line(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line: 'limit: Input should be less than ...'."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def _document(session: Session | None, run_id: str) -> dict:
    if session is None:
        raise RunNotFound("the results database holds no runs yet")
    try:
        return queries.run_document(session, run_id)
    except ErfnetError as exc:  # unknown or malformed run id, or no runs yet
        raise RunNotFound(str(exc)) from exc


def _progress_of(session: Session | None, doc: dict) -> dict | None:
    """A running run's progress (``queries.run_progress``); None once it has closed."""
    if session is None or doc["run"]["status"] != RunStatus.RUNNING:
        return None
    return queries.run_progress(session, doc["run"]["id"])


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return "/api/" not in path and not path.endswith(".csv")


def base_of(request: Request) -> str:
    """The app's own URL prefix as the browser sees it (Airflow's base_url included)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _csv_response(text: str, filename: str) -> Response:
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def create_app(
    require_user: Callable[..., Any],
    *,
    database_url: Callable[[], str] | None = None,
) -> FastAPI:
    """The results app; ``require_user`` must raise 401/403 for anonymous requests."""
    resolve = database_url or db.resolve_url
    app = FastAPI(
        title="ErfNet results",
        dependencies=[Depends(require_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        base = base_of(request)
        return TEMPLATES.TemplateResponse(
            request,
            template,
            {"base": base, "quote": lambda s: quote(str(s), safe=""), **context},
            status_code=status_code,
        )

    _error_handlers(app, page)
    _run_routes(app, resolve, page)
    _live_routes(app, resolve, page)
    _history_routes(app, resolve, page)
    _api_routes(app, resolve)
    _static_routes(app)
    return app


def _error_handlers(app: FastAPI, page: Callable[..., HTMLResponse]) -> None:
    """One line for every failure, as a page for a browser and as JSON for the API."""

    @app.exception_handler(ResultsUnavailable)
    async def _unavailable(request: Request, exc: ResultsUnavailable) -> Response:
        message = f"The results database is unavailable ({exc})."
        if _wants_html(request):
            return page(request, "error.html", status_code=503, title="Results unavailable", message=message)
        return JSONResponse({"detail": message}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        message = _validation_line(exc)
        if _wants_html(request):
            return page(request, "error.html", status_code=400, title="Bad request", message=message)
        return JSONResponse({"detail": message}, status_code=400)

    @app.exception_handler(RunNotFound)
    async def _not_found(request: Request, exc: RunNotFound) -> Response:
        if _wants_html(request):
            return page(request, "error.html", status_code=404, title="No such run", message=str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=404)


def _run_routes(app: FastAPI, resolve: Callable[[], str], page: Callable[..., HTMLResponse]) -> None:
    """The latest run, one run, its JSON and CSV downloads, and the probe's CANN upgrades."""

    def run_page(request: Request, run_id: str, reference: str | None, template: str) -> HTMLResponse:
        with _reading(resolve) as session:
            if run_id == "latest" and not _has_runs(session):
                return page(request, "empty.html", title="No runs yet", dag_id=DAG_ID)
            doc = _document(session, run_id)
            progress = _progress_of(session, doc)
        view = views.run_view(views.with_pending(doc, progress), reference_target=reference)
        airflow_base = base_of(request).removesuffix(URL_PREFIX)
        return page(
            request,
            template,
            title=f"Run {doc['run']['id']}",
            view=view,
            live=views.live_view(progress) if progress else None,
            airflow_base=airflow_base,
            dag_id=doc["run"].get("dag_id") or DAG_ID,
            latest=run_id == "latest",
        )

    @app.get("/", response_class=HTMLResponse)
    def latest(request: Request, reference: str | None = None) -> HTMLResponse:
        return run_page(request, "latest", reference, "run.html")

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def one_run(request: Request, run_id: str, reference: str | None = None) -> HTMLResponse:
        return run_page(request, run_id, reference, "run.html")

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str) -> JSONResponse:
        with _reading(resolve) as session:
            doc = _document(session, run_id)
        return JSONResponse(doc)

    @app.get("/api/upgrades")
    def api_upgrades(host: str | None = None) -> JSONResponse:
        """Each NPU host's CANN/driver/chip changes seen by the probe (time, host, old -> new): chart markers."""
        with _reading(resolve) as session:
            events = hosts.upgrade_events(session, host=host) if session is not None else []
        return JSONResponse(events)

    @app.get("/runs/{run_id}/accuracy.csv")
    def accuracy_csv(run_id: str) -> Response:
        with _reading(resolve) as session:
            doc = _document(session, run_id)
        return _csv_response(views.accuracy_csv(doc), f"erfnet-accuracy-{doc['run']['id']}.csv")

    @app.get("/runs/{run_id}/perf.csv")
    def perf_csv(run_id: str, reference: str | None = None) -> Response:
        with _reading(resolve) as session:
            doc = _document(session, run_id)
        try:
            views.check_reference(doc, reference)
        except ErfnetError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        return _csv_response(views.perf_csv(doc, reference), f"erfnet-perf-{doc['run']['id']}.csv")


def _live_routes(app: FastAPI, resolve: Callable[[], str], page: Callable[..., HTMLResponse]) -> None:
    """A running run as it goes: its tables as an HTML fragment (what its page swaps in every few
    seconds, static/live.js) and its progress as JSON. Behind the same login as every route."""

    @app.get("/runs/{run_id}/live", response_class=HTMLResponse)
    def live_fragment(request: Request, run_id: str, reference: str | None = None) -> HTMLResponse:
        with _reading(resolve) as session:
            doc = _document(session, run_id)
            progress = _progress_of(session, doc)
        view = views.run_view(views.with_pending(doc, progress), reference_target=reference)
        response = page(request, "_live.html", view=view, live=views.live_view(progress) if progress else None)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/api/runs/{run_id}/progress")
    def api_progress(run_id: str) -> JSONResponse:
        """Status, started_at, done of total cells stored, and each cell not stored yet with its state."""
        with _reading(resolve) as session:
            if session is None:
                raise RunNotFound("the results database holds no runs yet")
            try:
                progress = queries.run_progress(session, run_id)
            except ErfnetError as exc:  # unknown or malformed run id
                raise RunNotFound(str(exc)) from exc
        return JSONResponse(progress, headers={"Cache-Control": "no-store"})


def _window_of(session: Session, since: date | None, until: date | None, days: int | None) -> views.Window:
    """The date range asked for; a range that makes no sense is a 400."""
    try:
        return views.history_window(history_queries.span(session), since, until, days)
    except ErfnetError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc


def _history_of(session: Session, window: views.Window, batch: int | None) -> views.HistoryView:
    """What the history page shows of ``window``, at ``batch`` if the runs have it (else the first batch)."""
    batches = history_queries.batch_sizes(session)
    shown = batch if batch in batches else (batches[0] if batches else None)
    points = history_queries.points(session, window.since, window.until, batch_size=shown)
    summary = history_queries.cann_summary(session, batch_size=shown)
    runs, more = history_queries.runs_between(session, window.since, window.until, RUNS_SHOWN)
    findings = history_queries.findings_between(session, window.since, window.until)
    upgrades = hosts.upgrade_events(session, since=window.since, until=window.until)
    return views.history_view(points, summary, runs, more, findings, batches, shown, upgrades)


def _history_routes(app: FastAPI, resolve: Callable[[], str], page: Callable[..., HTMLResponse]) -> None:
    """The history page: charts of a date range, the CANN versions' summary, the range's findings and runs."""

    @app.get("/history", response_class=HTMLResponse)
    def history(
        request: Request,
        batch: int | None = Batch,
        since: date | None = None,
        until: date | None = None,
        days: int | None = Days,
    ) -> HTMLResponse:
        with _reading(resolve) as session:
            if session is None or not _has_runs(session):
                return page(request, "empty.html", title="No runs yet", dag_id=DAG_ID)
            window = _window_of(session, since, until, days)
            view = _history_of(session, window, batch)
            first_run = history_queries.span(session)[0]
        return page(
            request,
            "history.html",
            title="Run history",
            view=view,
            window=window,
            first_run=first_run.date() if first_run else None,
        )


def _api_routes(app: FastAPI, resolve: Callable[[], str]) -> None:
    """The JSON API beside the pages: runs, history by date range (paged), the CANN summary."""

    @app.get("/api/runs")
    def api_runs(limit: int = Limit) -> JSONResponse:
        with _reading(resolve) as session:
            runs = queries.list_runs(session, limit=limit) if session is not None else []
        return JSONResponse(runs)

    @app.get("/api/history")
    def api_history(
        request: Request,
        since: date | None = None,
        until: date | None = None,
        days: int | None = Days,
        batch: int | None = Batch,
        runs: int = RunsPerPage,
        after: str | None = None,
    ) -> JSONResponse:
        """The (run, target, batch) points of the range, all batches unless asked, ``runs`` runs a page
        (oldest first); ``next`` is the URL of the next page, None on the last."""
        with _reading(resolve) as session:
            if session is None:
                return JSONResponse({"since": None, "until": None, "points": [], "next": None})
            window = _window_of(session, since, until, days)
            try:
                points, last = history_queries.points_page(session, window.since, window.until, batch, runs, after)
            except ErfnetError as exc:
                raise HTTPException(status_code=400, detail=str(exc)) from exc
        # Relative to the app, as the browser reaches it (behind Airflow's base_url or a proxy).
        next_page = (
            f"{base_of(request)}/api/history?{request.url.include_query_params(after=last).query}" if last else None
        )
        return JSONResponse(
            {
                "since": window.first.isoformat(),
                "until": window.last.isoformat(),
                "older": window.older[0].isoformat() if window.older else None,
                "points": points,
                "next": next_page,
            }
        )

    @app.get("/api/cann")
    def api_cann(batch: int | None = Batch) -> JSONResponse:
        """Per CANN version, target and batch over all runs: best, median and latest fps and mIoU."""
        with _reading(resolve) as session:
            rows = history_queries.cann_summary(session, batch_size=batch) if session is not None else []
        return JSONResponse(rows)


def _static_routes(app: FastAPI) -> None:
    """The charting library and the page scripts; only the names in STATIC_FILES, never a request's path."""

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        path = STATIC_FILES.get(name)
        if path is None:
            raise HTTPException(status_code=404, detail="no such file")
        return FileResponse(path, media_type=_MEDIA[path.suffix], headers={"Cache-Control": "max-age=86400"})
