"""The REST API's documentation, served by the daemon: ``/openapi.json`` (the OpenAPI 3.1 document,
ngb/web/openapi.json; docs/openapi.json links to it) and ``/docs``, Swagger UI rendering it.

Swagger UI's files come from a registry package (``swagger-ui-py``, installed with the daemon's
other dependencies) and are served from ``/docs/assets/``: the page loads nothing from anywhere
else, so it works offline and under the daemon's Content-Security-Policy (its one script of our
own is static/api-docs.js). Both routes are behind the API's own auth (ngb/web/security.py): a
browser signs in with the login link (``/docs?token=...``) or the dashboard's cookie, and "Try it
out" then calls the API with that cookie."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quart import Response, send_from_directory
from quart_trio import QuartTrio

from .common import error

if TYPE_CHECKING:
    from .backend import WebBackend

OPENAPI = Path(__file__).parent / "openapi.json"
# The files of Swagger UI the page uses; nothing else of the package is served.
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png")


def swagger_ui_dir() -> Path | None:
    """Where the installed package keeps Swagger UI's files (the package itself is not imported)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def register(app: QuartTrio, daemon: WebBackend, static: Path) -> None:
    document = json.loads(OPENAPI.read_text(encoding="utf-8"))
    assets = swagger_ui_dir()

    @app.get("/openapi.json")
    async def openapi() -> Any:
        return Response(json.dumps(document), content_type="application/json")

    @app.get("/docs")
    async def docs_page() -> Any:
        if assets is None:
            return error(503, "API docs: Swagger UI is not installed (pip package swagger-ui-py; "
                              "scripts/setup.sh installs it); the document itself is at /openapi.json")
        return await send_from_directory(static, "api-docs.html")

    @app.get("/docs/assets/<name>")
    async def docs_asset(name: str) -> Any:
        if assets is None or name not in ASSETS:
            return error(404, "not found")
        response = await send_from_directory(assets, name)
        response.headers["Cache-Control"] = "max-age=86400"  # the package's files change only with it
        return response
