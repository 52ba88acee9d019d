"""The page's server: one HTML page, its script and style, and a small JSON API. Only those assets
and the API are served (nothing is read from a path the request names), and labels are written
only through ``POST /api/label``, whose input is checked before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from music_core.audit.labels import VERDICTS, LabelLog, shown_order
from music_core.errors import RecordError
from music_core.scoring import describe_truncation

from . import view

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}  # everything the page loads
PAGE_SIZE = 50
MAX_LIMIT = 500
MAX_BODY = 16_384


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(store: Any, labels: LabelLog, rewards: Any, seed: int = 0) -> Starlette:
    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:  # an allow-list: ../ or any other name is simply not here
            return error(404, "not found")
        return FileResponse(STATIC / name, media_type=ASSETS[name])

    async def meta(request: Request) -> Response:
        s = store.summaries or []
        return JSONResponse({
            "file": str(store.path), "count": store.count, "indexed": store.indexed, "ready": store.ready(),
            "index_error": store.error, "labels_file": str(labels.path), "rms": sorted(rewards.scorers),
            "rm_scored": rewards.scored(), "audited": bool(store.audit),
            "strategies": sorted({x["strategy"] for x in s}), "sources": sorted({x["source"] for x in s}),
            "turns": sorted({x["num_turns"] for x in s}), "verdicts": sorted({x["audit"] for x in s}),
            "warnings": labels.warnings, "skipped": store.skipped(),
            "truncation": {rm: describe_truncation(rm, t).lstrip("- ") for rm, t in rewards.truncation().items()}})

    async def pairs(request: Request) -> Response:
        q = request.query_params
        try:
            offset = max(0, int(q.get("offset", 0)))
            limit = min(MAX_LIMIT, max(1, int(q.get("limit", PAGE_SIZE))))
        except ValueError:
            return error(422, "offset and limit must be integers")
        blind = q.get("mode") == "label"
        filters = {k: q[k] for k in ("strategy", "verdict", "turns", "source", "q", "disagree") if q.get(k)}
        if blind:
            filters = {}  # filtering by what reveals the label would unblind the labeller
        if not filters:  # the first pages need no index: straight from the file
            rows = [_row(i, store.get(i), blind) for i in range(offset, min(store.count, offset + limit))
                    if store.usable(i)]  # an unusable line is left out (counted in /api/meta)
            return JSONResponse({"total": store.count, "offset": offset, "rows": rows, "complete": True})
        if not store.ready():
            return JSONResponse({"total": None, "offset": offset, "rows": [], "complete": False,
                                 "indexing": f"{store.indexed} of {store.count}", "error": store.error})
        hits = [s for s in store.summaries if _match(s, filters)]
        rows = [{k: v for k, v in s.items() if k != "text"} for s in hits[offset:offset + limit]]
        return JSONResponse({"total": len(hits), "offset": offset, "rows": rows, "complete": True,
                             "rm_scored": rewards.scored()})

    def _match(s: dict[str, Any], f: dict[str, str]) -> bool:
        if "strategy" in f and s["strategy"] != f["strategy"]:
            return False
        if "verdict" in f and s["audit"] != f["verdict"]:
            return False
        if "turns" in f and str(s["num_turns"]) != f["turns"]:
            return False
        if "source" in f and s["source"] != f["source"]:
            return False
        if "q" in f and f["q"].lower() not in s["text"]:
            return False
        return not ("disagree" in f and rewards.disagrees(s["index"]) is not True)

    def _row(i: int, pair: Any, blind: bool) -> dict[str, Any]:
        if blind:
            return {"index": i}
        s = store.summary(i, pair)
        return {k: v for k, v in s.items() if k != "text"}

    async def pair(request: Request) -> Response:
        q = request.query_params
        try:
            found = store.nearest(int(request.path_params["index"]), -1 if q.get("dir") == "-1" else 1)
        except ValueError:
            found = None
        except RecordError as exc:
            return error(500, str(exc))
        if found is None:  # out of range, or only skipped lines that way
            skipped = store.skipped()["count"]
            return error(404, f"no pair {request.path_params['index']} (the file holds {store.count}"
                              + (f", {skipped} skipped as unusable)" if skipped else ")"))
        i, p = found
        if q.get("mode") == "label":
            who = q.get("labeller", "").strip()
            if not who:
                return error(422, "labeller: a name is required in label mode")
            previous = labels.previous(p.id, who)  # kept in memory: no re-read of the file per request
            return JSONResponse(view.blind(i, store.count, p, shown_order(p.id, who, seed),
                                           previous["verdict"] if previous else None))
        return JSONResponse(view.browse(i, store.count, p, store.audit.get(p.id), rewards.pair(p)))

    async def resume(request: Request) -> Response:
        who = request.query_params.get("labeller", "").strip()
        if not who:
            return error(422, "labeller: a name is required")
        done = labels.labelled_by(who)
        for i in range(store.count):  # ids are parsed in order, only as far as needed
            if store.usable(i) and store.get(i).id not in done:
                return JSONResponse({"index": i, "labelled": len(done)})
        return JSONResponse({"index": store.count - 1, "labelled": len(done), "all_done": True})

    async def label(request: Request) -> Response:
        # Only this page may write labels (datasette's cross-origin protection): a form or script
        # on any other site the labeller opens could otherwise post to this local server.
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return error(415, "a label is posted as application/json")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            return error(403, f"cross-origin label post from {origin!r} refused")
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return error(403, "cross-site label post refused")
        body = await request.body()
        if len(body) > MAX_BODY:
            return error(413, f"a label request is at most {MAX_BODY} bytes")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(422, "the body is not JSON")
        if not isinstance(data, dict):
            return error(422, "the body must be a JSON object")
        problems = []
        index, pid, who = data.get("index"), data.get("pair_id"), data.get("labeller")
        verdict, note = data.get("verdict"), data.get("note", "")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < store.count:
            problems.append(f"index: an integer in [0, {store.count})")
        if not isinstance(pid, str) or not pid:
            problems.append("pair_id: a string")
        if not isinstance(who, str) or not who.strip() or len(who) > 100:
            problems.append("labeller: a name of 1-100 characters")
        if verdict not in VERDICTS:
            problems.append(f"verdict: one of {list(VERDICTS)}")
        if not isinstance(note, str) or len(note) > 2000:
            problems.append("note: a string of at most 2000 characters")
        if problems:
            return error(422, "; ".join(problems))
        assert isinstance(pid, str) and isinstance(who, str) and isinstance(verdict, str) and isinstance(note, str)
        if not store.usable(index) or store.get(index).id != pid:
            return error(409, f"pair {index} is not {pid!r}: the file changed, reload the page")
        order = shown_order(pid, who.strip(), seed)  # the server's order, never the client's word
        record = labels.append(pid, who.strip(), verdict, order, note, seed)
        return JSONResponse({"ok": True, "record": record})

    routes = [Route("/", page), Route("/static/{name}", asset), Route("/api/meta", meta), Route("/api/pairs", pairs),
              Route("/api/pair/{index}", pair), Route("/api/resume", resume),
              Route("/api/label", label, methods=["POST"])]
    return Starlette(routes=routes)
