"""The web page ``imagegen serve`` shows at ``/``: static HTML, CSS and plain ES modules shipped in the package (no
build step, nothing from a CDN). It drives the native job API like any other client; its files hold no data, so they
are served without credentials (:data:`imagegen.server.auth.PAGE_PREFIX`) and the page asks for a key when the API
answers 401."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "add_page"]

STATIC_DIR = Path(__file__).resolve().parent / "static"


def add_page(app: FastAPI) -> None:
    """Serve the page: ``/`` is its HTML, ``/ui/...`` its stylesheet and modules."""
    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="ui")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        # Revalidated on every load, so an upgraded server never runs a stale page against a newer API.
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
