"""The FastAPI application: JSON endpoints over an :class:`~kgglm.serve.engine.Engine`, and the page.

Endpoints (OpenAPI at ``/openapi.json``; ``/docs``, whose page loads its assets from a CDN, only with
``docs=True``):

* ``GET /health`` - ready flag, model, dataset, checkpoint, batching stats
* ``GET /users?query=&limit=`` - user search (for the page)
* ``GET /users/{user}/recommendations?k=10&explanation=best|knowledge`` - explained top-k
* ``POST /recommendations`` ``{"users": [...], "k": 10, "explanation": "best"}`` - a batch
* ``GET /users/{user}/history`` - training items
* ``GET /items/{item}`` - title and KG facts around the item
* ``GET /run`` - the served run: name, model, dataset, test/valid metrics of the model and its baselines
* ``GET /run/report`` - the run's ``report.html`` (its own stricter CSP: no script at all)
* ``GET /`` and ``/static/{app.js,style.css}`` - the explorer page (files read once at start-up)

Unknown users/items answer 404 with a message naming them; invalid parameters 422 (the error's
location and message, never the input echoed back: NaN or a huge value cannot break the answer).
Nothing a client sends reaches the file system: the page's three files and the run's report are
fixed routes (:mod:`kgglm.serve.rundir`; a run without one answers 404). The Host
header must be one of ``allowed_hosts`` (default: loopback names; DNS rebinding), and
:class:`~kgglm.serve.guard.Guard` adds the body limit, the optional bearer token and the security headers.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import PurePath
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from kgglm.serve.batching import Batcher
from kgglm.serve.engine import Engine, NotFound
from kgglm.serve.guard import MAX_BODY_BYTES, Guard
from kgglm.serve.rundir import REPORT_CSP, RunFiles, find_run_dir

logger = logging.getLogger(__name__)

MAX_K = 100
MAX_BATCH_USERS = 256
Mode = Literal["best", "knowledge"]
UserId = Annotated[str, Path(max_length=200, description="original user id")]
ItemId = Annotated[str, Path(max_length=200, description="original item id")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="items per user")]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_ERRORS, MAX_ERROR_TEXT = 20, 200  # of a 422 answer
STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}


class BatchRequest(BaseModel):
    users: list[str] = Field(..., min_length=1, max_length=MAX_BATCH_USERS, description="original user ids")
    k: int = Field(10, ge=1, le=MAX_K)
    explanation: Mode = "best"


def _static_files() -> dict[str, str]:
    root = resources.files("kgglm.serve") / "static"
    return {name: (root / name).read_text(encoding="utf-8") for name in ("index.html", *STATIC)}


def validation_errors(exc: RequestValidationError) -> list[dict]:
    """The errors of a 422 answer: location, message and type, bounded in number and length; the
    input is not echoed (it may be huge, or a NaN that JSON cannot write)."""
    def short(v: object) -> object:
        return v if isinstance(v, int) else str(v)[:MAX_ERROR_TEXT]

    return [{"loc": [short(x) for x in list(e.get("loc", ()))[:10]], "msg": str(e.get("msg", ""))[:MAX_ERROR_TEXT],
             "type": str(e.get("type", ""))[:MAX_ERROR_TEXT]} for e in exc.errors()[:MAX_ERRORS]]


def run_name(checkpoint: str) -> str:
    """The checkpoint's last three path parts (``RUN/checkpoint/best``): which run, not where on disk."""
    return "/".join(PurePath(checkpoint).parts[-3:])


def create_app(engine: Engine, *, max_batch: int = 32, max_wait_ms: float = 5.0, api_key: str | None = None,
               allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS, max_body_bytes: int = MAX_BODY_BYTES,
               docs: bool = False, run_dir: str | os.PathLike | None = None) -> FastAPI:
    """The app for a loaded engine; the batcher starts and stops with the app's lifespan.

    ``allowed_hosts``: Host header names accepted (``None`` or ``["*"]``: any); ``api_key``: the
    bearer token every endpoint but ``/health`` needs; ``docs``: serve ``/docs`` (assets from a CDN);
    ``run_dir``: the run whose report and metrics ``/run`` shows (default: the checkpoint's own run)."""
    batcher = Batcher(engine.recommend, max_batch=max_batch, max_wait_ms=max_wait_ms)
    files = _static_files()
    run = RunFiles(run_dir if run_dir is not None else find_run_dir(engine.info.checkpoint))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="kgglm serve", version="1", lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url=None,
                  description="Explained recommendations: knowledge-graph paths user -> item -> ... -> item.")
    app.state.engine, app.state.batcher = engine, batcher
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or ["*"]))  # outermost

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": validation_errors(exc)})

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    def k_limit(k: int) -> int:
        return min(k, engine.info.n_items)

    @app.get("/health", summary="readiness, model and dataset")
    async def health() -> dict:
        info = engine.info
        return {"ready": True, "model": info.model, "dataset": info.dataset, "checkpoint": run_name(info.checkpoint),
                "n_users": info.n_users, "n_items": info.n_items, "hop_length": info.hop_length,
                "num_beams": info.num_beams, "load_seconds": info.load_seconds,
                "explanation_modes": ["best", "knowledge"], "batching": batcher.stats.as_dict(),
                "threads": engine.threads, "timing": {k: round(v, 3) for k, v in engine.timing.items()}}

    @app.get("/users", summary="search users by id")
    async def users(query: Annotated[str, Query(max_length=100)] = "",
                    limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict:
        return {"query": query, "users": engine.search_users(query, limit)}

    # The recommendation endpoints answer a JSONResponse of plain JSON types themselves: FastAPI's
    # jsonable_encoder walks every nested value of a returned dict again (4 ms for one user's 10
    # explained items, 20x the json.dumps), on the event loop that every other request waits for.
    @app.get("/users/{user}/recommendations", summary="explained top-k recommendations of one user",
             response_class=JSONResponse)
    async def user_recommendations(user: UserId, k: K = 10, explanation: Mode = "best") -> JSONResponse:
        u = engine.user_index(user)
        result = await batcher.submit(u, k_limit(k), explanation)
        return JSONResponse({**result, "k": k})

    @app.post("/recommendations", summary="explained top-k recommendations of several users",
              response_class=JSONResponse)
    async def batch_recommendations(req: BatchRequest) -> JSONResponse:
        idx = [engine.user_index(u) for u in req.users]
        results = await batcher.submit_many(idx, k_limit(req.k), req.explanation)
        return JSONResponse({"k": req.k, "explanation": req.explanation, "results": results})

    @app.get("/users/{user}/history", summary="the user's training items")
    async def history(user: UserId) -> dict:
        return engine.history(user)

    @app.get("/items/{item}", summary="an item's title and KG facts")
    async def item(item: ItemId, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
        return engine.item(item, limit)

    @app.get("/run", summary="the served run: test/valid metrics of the model and its baselines")
    def run_summary() -> JSONResponse:  # plain def: result.json is read in the thread pool
        summary = run.summary()
        if summary is None:
            return JSONResponse(status_code=404, content={"detail": run.error})
        return JSONResponse(summary)

    @app.get("/run/report", summary="the run's report.html", response_class=HTMLResponse)
    def run_report() -> Response:
        page = run.report()
        if page is None:
            where = f"run {run.name}" if run.name else "this checkpoint"
            return JSONResponse(status_code=404, content={
                "detail": f"{where} has no report.html (write it with: kgglm report RUN_DIR)"})
        return HTMLResponse(page, headers={"content-security-policy": REPORT_CSP, "cache-control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(files["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(status_code=404, detail=f"no static file {name[:100]!r}")
        return Response(files[name], media_type=STATIC[name])

    return app
