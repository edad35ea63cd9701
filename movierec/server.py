"""`movierec serve`: a saved model answering over HTTP (a JSON API and a page to try it), built on FastAPI.

:func:`create_app` loads the model once and answers every request from it through :class:`movierec.serving.Served`,
the same implementation as the command line and the Python API, so the same input gives the same list.

Safe by default (the CLI binds 127.0.0.1 unless told otherwise):

- no endpoint writes a file or takes a path: a request names users and movies, never files;
- request bodies are at most :data:`MAX_BODY` bytes, lists at most :data:`MAX_N` movies, a new user at most
  :data:`MAX_RATINGS` ratings;
- every bad request (unknown user or movie, ambiguous title, stars off the scale, malformed JSON, a wrong
  path or method) is a 4xx answer ``{"error": "one sentence."}``, never a traceback;
- the page inserts titles as text (never as HTML) and is served with a Content-Security-Policy that allows
  its own script only;
- with ``movierec serve --workers N`` the app is forked into N processes after the model is loaded;
  :class:`ReloadCounter` makes a reload reach each of them;
- a checkpoint replaced or deleted on disk does not disturb the server: the loaded model keeps its open file
  (a save replaces a checkpoint by renaming a new file over it, so the old file lives on while open) until
  ``POST /reload``, which only the server's own machine may call.
"""

from __future__ import annotations

import ipaddress
import logging
import mmap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StrictInt
from starlette.exceptions import HTTPException

from movierec import checkpoint, paths
from movierec.device import DEFAULT_DEVICE
from movierec.errors import MovierecError, NotFound
from movierec.loading import open_model
from movierec.serving import Served
from movierec.version import __version__

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 64 * 1024
"""Largest request body accepted, in bytes: a thousand ratings of titles of usual length (about 45 bytes each) fit."""
MAX_N = 100
"""Longest list a request may ask for."""
MAX_RATINGS = 1000
"""Most ratings one new user's request may carry."""
MAX_TEXT = 300
"""Longest title or search text accepted."""
MAX_ID = 2**63 - 1

log = logging.getLogger(__name__)

# The page's own script and style only: a title that reached the page as HTML still could not run code.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
              "/style.css": ("style.css", "text/css; charset=utf-8")}


# -- the model, shared by every request -------------------------------------------------------------------
class ModelHolder:
    """The loaded model, one request at a time (its reads share one open file), and how to reload it.

    The answering endpoints are ``async``: they run on the event loop, one after another, without a hop to a
    worker thread. A factor model answers in well under a millisecond and one model's answers could not overlap
    anyway, while each of the 40 worker threads Starlette would otherwise start keeps memory of its own (the
    server's RSS grew by 4 MB during a benchmark run with them, by 0.2 MB without)."""

    def __init__(self, served: Served, name: str | None, device: Any, reloads: ReloadCounter | None = None):
        self._served = served
        self._name = name  # what to reload: the name asked for (None: the newest), else the file served
        self._device = device
        self._lock = threading.Lock()
        self._reloading = threading.Lock()
        self._reloads = reloads
        self._seen_reloads = reloads.value() if reloads is not None else 0

    @contextmanager
    def use(self) -> Iterator[Served]:
        if self._reloads is not None and self._reloads.value() != self._seen_reloads:
            self._follow_reload()
        with self._lock:
            yield self._served

    def _follow_reload(self) -> None:
        """Another worker process of this server reloaded: reload too, on a thread, answering from the model
        loaded until then meanwhile."""
        assert self._reloads is not None
        self._seen_reloads = self._reloads.value()
        threading.Thread(target=self._reload_quietly, name="movierec-reload", daemon=True).start()

    def _reload_quietly(self) -> None:
        try:
            self.reload(tell_others=False)
        except MovierecError as exc:  # as the worker that was asked: the old model stays
            log.warning("%s Still serving %s.", exc, self.name)

    @property
    def current(self) -> Served:
        """The model now served, for what reads only memory and may run beside the rest (the title search)."""
        return self._served

    @property
    def name(self) -> str:
        return self._served.meta.name

    def reload(self, *, tell_others: bool = True) -> Served:
        """Open the model again by the name it was asked for (the newest, when none was) and answer from it
        from now on; the old one closes once the request using it is done. On failure the old one stays. The
        server's other worker processes follow (``tell_others``)."""
        with self._reloading:
            fresh = open_model(self._name, self._device)
            _warm(fresh)
            with self._lock:
                old, self._served = self._served, fresh
            old.close()
            if tell_others and self._reloads is not None:
                self._seen_reloads = self._reloads.bump()
            return fresh

    def close(self) -> None:
        with self._lock:
            self._served.close()


class ReloadCounter:
    """How many reloads the worker processes of one server have made (``movierec serve --workers``): a number
    in memory they share, made before they are forked. The worker asked to reload counts one; each of the
    others, seeing the number move at its next request, reloads too."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, 8)  # anonymous and shared: forked processes see one another's writes

    def value(self) -> int:
        return int.from_bytes(self._memory[:8], "little")

    def bump(self) -> int:
        """Count one more reload and return the new count. (Two workers counting at once may count one: every
        other worker still sees the number move.)"""
        count = self.value() + 1
        self._memory[:8] = count.to_bytes(8, "little")
        return count


# -- requests and answers, as the OpenAPI page documents them ----------------------------------------------
class Rating(BaseModel):
    """One movie a new user rated."""

    movie: Annotated[StrictInt, Field(ge=0, le=MAX_ID)] | Annotated[str, Field(min_length=1, max_length=MAX_TEXT)] = (
        Field(description="A title, matched as people type it (case, punctuation, article and year optional), "
                          "or a MovieLens movie id.", examples=["Toy Story (1995)", 1]))
    stars: StrictInt | Annotated[float, Field(strict=True, allow_inf_nan=False)] = Field(
        description="Stars on the model's rating scale (see /health).", examples=[5])


class Row(BaseModel):
    rank: int
    movie_id: int
    title: str
    year: int | None
    genres: list[str]
    score: float = Field(description="What the list is ordered by (see /health): for rating and like models the "
                               "chance of picking and liking the movie (match), else the model's top-N score.")
    predicted: float | None = Field(None, description="The model's own prediction: stars clipped to the scale or "
                                                      "P(like); null for top-N models.")
    because_you_liked: str | None = Field(
        description="The movie the user rated 4 stars or more that is most like this one, never itself "
                    "(None: the user rated no other movie that high, and the page shows no reason).")


class SimilarRow(BaseModel):
    rank: int
    movie_id: int
    title: str
    year: int | None
    genres: list[str]
    score: float = Field(description="Cosine similarity of the two movies' learned vectors.")


class Similar(BaseModel):
    movie_id: int
    title: str
    similar: list[SimilarRow]


class Movie(BaseModel):
    movie_id: int
    title: str
    year: int | None
    genres: list[str]
    ratings: int = Field(description="Its number of ratings in the model's training data.")


class Health(BaseModel):
    status: str
    model: str = Field(description="The saved name of the model being served.")
    algorithm: str
    dataset: str
    stars: list[float] = Field(description="The rating scale: every number of stars the data uses.")
    score: str = Field(description='What a row\'s score means: "match" (the chance of picking and liking it), '
                             '"predicted rating" / "like probability" (models saved without a picks model) or "score".')
    predicted: str | None = Field(None, description='What a row\'s "predicted" is: "predicted rating", '
                                                    '"like probability", or null (top-N models).')
    people: dict[str, list[str]] = Field(default_factory=dict, description=(
        "What a new user may say of themselves (POST /recommend's age, gender, occupation), by field: the age "
        "bands, genders and occupations the model knows; empty when it knows nobody's."))
    unrated_movies: bool = Field(False, description="Whether lists can hold movies without training ratings "
                                                    "(include_unrated).")
    version: str


class SavedModel(BaseModel):
    name: str
    model: str
    mode: str
    dataset: str
    split: str
    created: str
    metrics: dict[str, Any]
    served: bool


class Models(BaseModel):
    served: str
    models: list[SavedModel]


class Error(BaseModel):
    error: str = Field(description="What was wrong, in one sentence.")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "Bad input: an ambiguous title, stars off the scale, an unknown genre."},
    404: {"model": Error, "description": "No such user or movie."},
    422: {"model": Error, "description": "A malformed request: a missing or out-of-bounds parameter, bad JSON."},
}

N = Annotated[int, Query(ge=1, le=MAX_N, description="How many movies to list.")]
Genres = Annotated[list[str] | None, Query(max_length=50, description="Only movies of this genre (repeat for any "
                                                                    "of several).")]
MinYear = Annotated[int | None, Query(ge=0, le=9999, description="Only movies released in or after this year.")]
MaxYear = Annotated[int | None, Query(ge=0, le=9999, description="Only movies released in or before this year.")]
Unrated = Annotated[bool, Query(description="Also list movies without training ratings (models that know movies "
                                            "by their features: see /health).")]


# -- the application ----------------------------------------------------------------------------------------
def create_app(model: Served | str | None = None, *, device: Any = DEFAULT_DEVICE,
               reloads: ReloadCounter | None = None) -> FastAPI:
    """The web application answering from ``model``: a loaded :class:`Served`, or the saved model's name (the
    newest when None), loaded here, once. ``POST /reload`` opens it again by that name, and with ``reloads``
    (the application forked into several worker processes) every worker does."""
    served = model if isinstance(model, Served) else open_model(model, device)
    _warm(served)
    holder = ModelHolder(served, str(served.path) if isinstance(model, Served) else model, device, reloads)
    page = {path: (resources.files("movierec.web").joinpath(file).read_bytes(), media)
            for path, (file, media) in PAGE_FILES.items()}

    app = FastAPI(title="movierec", version=__version__, responses=ERRORS,
                  description="Movie recommendations from a saved movierec model. Errors are "
                              '`{"error": "one sentence."}` with a 4xx status.')
    app.state.holder = holder
    _add_error_handlers(app)
    app.add_middleware(_BodyLimit, limit=MAX_BODY)

    @app.get("/health", response_model=Health, tags=["about"])
    async def health() -> Response:
        """The served model: its name, data, rating scale and what its scores mean."""
        return JSONResponse(_health(holder))

    @app.get("/models", response_model=Models, tags=["about"])
    def models() -> Response:  # reads files: on a worker thread
        """The saved models (read from their headers alone), and which one is served."""
        with holder.use() as s:
            name, path = s.meta.name, s.path
        return JSONResponse({"served": name, "models": [
            {"name": m.name, "model": m.model, "mode": m.mode, "dataset": m.dataset, "split": m.split,
             "created": m.created, "metrics": m.metrics, "served": _same_file(p, path)}
            for p, m in _saved_models()]})

    @app.get("/recommend", response_model=list[Row], tags=["recommendations"])
    async def recommend(
        user: Annotated[int, Query(ge=-MAX_ID, le=MAX_ID, description="MovieLens id of a user in the training "
                                                                      "data.")],
        n: N = 10, genre: Genres = None, min_year: MinYear = None, max_year: MaxYear = None,
        include_seen: Annotated[bool, Query(description="Keep movies the user already rated.")] = False,
        include_unrated: Unrated = False,
    ) -> Response:
        """Top-n movies for a known user, each with the movie they liked that it is most like."""
        with holder.use() as s:
            rows = s.recommend(user, n, genres=genre, min_year=min_year, max_year=max_year,
                               include_seen=include_seen, include_unrated=include_unrated)
        return JSONResponse(rows)

    @app.post("/recommend", response_model=list[Row], tags=["recommendations"])
    async def recommend_new(  # noqa: PLR0913 -- an endpoint's query parameters, as a command's options
        ratings: Annotated[list[Rating], Body(max_length=MAX_RATINGS,
                                              description="A new user's ratings (the last of a movie named twice "
                                                          "counts); may be empty when age, gender or occupation "
                                                          "describe them.")],
        n: N = 10, genre: Genres = None, min_year: MinYear = None, max_year: MaxYear = None,
        shrink: Annotated[float | None, Query(ge=0, le=1e12, allow_inf_nan=False, description=(
            "Rank by predictions shrunk towards neutral by each movie's training ratings; a movie with this many "
            "keeps half its lead (default: 8x the mean ratings per movie; 0 = off)."))] = None,
        age: Annotated[int | None, Query(ge=-MAX_ID, le=MAX_ID, description=(
            "The user's age in years (models that know people by it: see /health's people)."))] = None,
        gender: Annotated[str | None, Query(max_length=MAX_TEXT, description="The user's gender, as the release "
                                                                             "records it (see /health).")] = None,
        occupation: Annotated[str | None, Query(max_length=MAX_TEXT, description=(
            "The user's occupation, as the release names it (see /health)."))] = None,
        include_unrated: Unrated = False,
    ) -> Response:
        """Top-n movies for someone not in the training data, from their ratings (folded in, no retraining) and,
        for models that know people by them, their age, gender and occupation."""
        pairs = [(r.movie, r.stars) for r in ratings]
        person = {"age": age, "gender": gender, "occupation": occupation}
        with holder.use() as s:
            rows = s.recommend_new(pairs, n, shrink=shrink, genres=genre, min_year=min_year, max_year=max_year,
                                   person=person, include_unrated=include_unrated)
        return JSONResponse(rows)

    @app.get("/similar", response_model=Similar, tags=["movies"])
    async def similar(
        movie: Annotated[str, Query(min_length=1, max_length=MAX_TEXT, description="A title or MovieLens id.")],
        n: N = 10,
        min_ratings: Annotated[int, Query(ge=0, le=MAX_ID, description=(
            "Only list movies with at least this many training ratings."))] = 20,
    ) -> Response:
        """The movies nearest to one movie by the model's learned movie vectors (cosine similarity)."""
        with holder.use() as s:
            return JSONResponse(s.similar(movie, n, min_ratings=min_ratings))

    @app.get("/movies", response_model=list[Movie], tags=["movies"])
    def movies(
        q: Annotated[str, Query(min_length=1, max_length=MAX_TEXT, description=(
            "Words of a title as typed (the last one may be cut short), or a MovieLens id."))],
        n: N = 10,
    ) -> Response:
        """Title search for autocomplete: best matches first, then the better-known movies."""
        # On a worker thread, without the model's lock: it reads the titles in memory only, and goes through every
        # title in Python (2 ms at ml-100k, 50-90 ms for 59,000 titles), which the other requests need not await.
        return JSONResponse(holder.current.search(q, n))

    @app.post("/reload", response_model=Health, tags=["about"])
    def reload(request: Request) -> Response:  # loads a model: on a worker thread, the loop answers meanwhile
        """Load the model again from disk (after a retrain replaced it); only from the server's own machine.
        Until then the server keeps answering from the model it loaded, whatever happens to the file."""
        if not _loopback(request):
            return _error(403, "Reloading is allowed only from the server's own machine.")
        try:
            holder.reload()
        except MovierecError as exc:
            return _error(409, f"{exc} Still serving {holder.name}.")
        return JSONResponse(_health(holder))

    for path, (body, media) in page.items():
        app.add_api_route(path, _page_route(body, media), methods=["GET", "HEAD"], include_in_schema=False)
    return app


def _warm(served: Served) -> None:
    """Build the title index now, not during the first search."""
    served.search("a", 1)


def _health(holder: ModelHolder) -> dict[str, Any]:
    with holder.use() as s:
        m = s.meta
        return {"status": "ok", "model": m.name, "algorithm": m.mode or m.model, "dataset": m.dataset,
                "stars": list(m.rating_values), "score": s.score_name,
                "predicted": s.predicted_name, "people": s.about_people, "unrated_movies": s.lists_unrated,
                "version": __version__}


def _page_route(body: bytes, media: str) -> Any:
    async def serve_page() -> Response:
        return Response(body, media_type=media, headers={"Content-Security-Policy": PAGE_POLICY,
                                                         "Cache-Control": "no-cache"})
    return serve_page


def _saved_models() -> list[tuple[Any, checkpoint.CheckpointMeta]]:
    """The saved models' headers, oldest first, skipping unreadable files. (Not checkpoint.scan_checkpoints,
    which also deletes dead writers' temporary files: no request makes the server touch the models folder.)"""
    folder = paths.models_dir()
    found = []
    for p in sorted(folder.glob(f"*{checkpoint.SUFFIX}")) if folder.is_dir() else []:
        try:
            found.append((p, checkpoint.read_meta(p)))
        except (MovierecError, OSError):
            continue
    found.sort(key=lambda pm: (pm[1].created, pm[0].name))
    return found


def _same_file(a: Any, b: Any) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- errors: one sentence, always ---------------------------------------------------------------------------
def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MovierecError)
    def library_error(request: Request, exc: MovierecError) -> JSONResponse:
        return _error(404 if isinstance(exc, NotFound) else 400, str(exc))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, validation_sentence(exc.errors()))

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        path = request.url.path
        headers = exc.headers
        if exc.status_code == 404:
            message = f"There is no {path[:80]!r} here; the API is listed at /docs."
        elif exc.status_code == 405:
            # Every method of the path (Starlette names only the first route's, e.g. GET for /recommend).
            methods = {m for r in request.app.routes if getattr(r, "methods", None) and r.path_regex.match(path)
                       for m in r.methods}
            allowed = ", ".join(sorted(methods - {"HEAD"}))
            headers = {**(headers or {}), "Allow": ", ".join(sorted(methods))}
            message = f"{request.method[:10]} is not allowed on {path[:80]}" + (f"; use {allowed}." if allowed else ".")
        else:
            message = str(exc.detail).rstrip(".") + "."
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "The server failed to answer this request; its log says why.")


_FIELDS = {"movie": "'movie' must be a title or a MovieLens id (a whole number from 0)",
           "stars": "'stars' must be a number"}


def validation_sentence(errors: Any) -> str:
    """The first of FastAPI's validation errors as one sentence a person can act on."""
    e = list(errors)[0] if errors else {}
    loc, kind = tuple(e.get("loc", ())), e.get("type", "")
    if kind == "json_invalid":
        return "The request body is not valid JSON."
    if loc[:1] == ("body",):
        rest = loc[1:]
        if not rest:
            if kind == "too_long":
                return f"At most {MAX_RATINGS} ratings are accepted in one request."
            return ('The request body must be a JSON list of ratings, such as '
                    '[{"movie": "Toy Story (1995)", "stars": 5}].')
        where = f"Rating {rest[0] + 1}" if isinstance(rest[0], int) else "The request"
        field = next((str(p) for p in rest[1:] if isinstance(p, str)), None)
        if field is None:
            return f'{where} must be an object such as {{"movie": "Toy Story (1995)", "stars": 5}}.'
        if kind == "missing":
            return f"{where} has no {field!r}."
        if field in _FIELDS:
            return f"{where}: {_FIELDS[field]}" + (f", {_detail(e)}." if kind.endswith(("_long", "_short")) else ".")
        return f"{where}: {field!r} {_detail(e)}."
    name = str(loc[-1]) if loc else "the request"
    if kind == "missing":
        return f"The query parameter {name!r} is required."
    return f"The query parameter {name!r} {_detail(e)}."


def _detail(e: dict[str, Any]) -> str:
    msg = str(e.get("msg", "is not valid")).rstrip(".")
    for prefix in ("Input ", "Value error, "):
        msg = msg.removeprefix(prefix)
    if msg.startswith("should"):
        return msg
    return "is not valid: " + msg[:1].lower() + msg[1:]


class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 and one sentence, before anything parses them;
    counts what arrives, so a body without (or lying about) its Content-Length is bounded too."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = _error(413, f"The request body is over the limit of {self.limit // 1024} KB.")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await too_big(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await too_big(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
