"""What the officer console (/console) and the privacy center (/privacy) share.

Both are server-rendered (Jinja2, autoescaped) and load nothing from outside: their one script and
one style sheet come from `/static/` on this server, so the Content-Security-Policy can forbid every
other source and every inline script. Every POST form is checked for a same-site Origin (or Referer)
as the auditor page's are; the console adds a per-session CSRF token on top (doors.api.console).

`mount_web` mounts the static route, the console, the privacy center and offline API docs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from doors.api.browser import security_headers, under
from dsr.access import AccessConfig
from dsr.net import is_loopback
from dsr.service import DsrService

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates" / "web"
PAGE_SKELETON = HERE / "templates"  # page.html, the skeleton these pages share with the auditor page
STATIC = HERE / "static"
STATIC_PREFIX = "/static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = security_headers(CSP)
#: Files the static route serves: nothing else under the directory is reachable.
STATIC_FILES = {"site.css": "text/css", "console.js": "text/javascript"}


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(TEMPLATES), str(PAGE_SKELETON)]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def secure_cookie(request: Request) -> bool:
    """Secure unless the page was served over plain http to a loopback address (a laptop demo)."""
    return request.url.scheme == "https" or not is_loopback(request.url.hostname)


def field_errors(problems: list[tuple[str, str]]) -> dict[str, str]:
    """(field, message) pairs to a field -> message map (the first message per field)."""
    found: dict[str, str] = {}
    for name, message in problems:
        found.setdefault(name, message)
    return found


def render_page(env: jinja2.Environment, name: str, context: Mapping[str, Any], code: int = 200) -> HTMLResponse:
    return HTMLResponse(env.get_template(name).render(**context), status_code=code)


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI from this server (the fastapi-offline package's copy), not from a CDN: `/docs`
    works on a machine without internet, and no third party learns who reads the API docs."""
    from importlib.resources import files

    from fastapi.staticfiles import StaticFiles

    docs_static = Path(str(files("fastapi_offline") / "static"))  # the package's copy of Swagger UI and ReDoc

    replaced = {app.docs_url, app.redoc_url}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in replaced]
    app.mount("/static-offline-docs", StaticFiles(directory=str(docs_static)), name="static-offline-docs")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect = app.swagger_ui_oauth2_redirect_url

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - API docs",
                                   oauth2_redirect_url=redirect,
                                   swagger_js_url="/static-offline-docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static-offline-docs/swagger-ui.css",
                                   swagger_favicon_url="/static-offline-docs/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc", with_google_fonts=False,
                              redoc_js_url="/static-offline-docs/redoc.standalone.js",
                              redoc_favicon_url="/static-offline-docs/favicon.png")

    if redirect and not any(getattr(r, "path", None) == redirect for r in app.router.routes):
        @app.get(redirect, include_in_schema=False)
        def docs_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()


def mount_web(app: FastAPI, *, service: DsrService, access: AccessConfig, evidence: Any, intake: Any,
              smtp: Callable[[], Any] | None = None) -> None:
    """Add the console, the privacy center, their static files and offline API docs to `app`.

    Args:
        app: The API app (call once, at the end of `create_app`).
        service: The service every action goes through.
        access: Officer tokens (sign-in to the console).
        evidence: Storage of packages (`open_package(request_id)`).
        intake: The public intake (`dsr.intake.Intake`) the OpenDSR routes use: the privacy center
            submits and verifies through the same object, so its code limits are the same.
        smtp: SMTP settings for the download-link e-mail (default: the intake's).
    """
    from doors.api.center import mount_center
    from doors.api.console import mount_console

    @app.middleware("http")
    async def web_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if under(request.url.path, "/console", "/privacy", STATIC_PREFIX):
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    @app.get(STATIC_PREFIX + "/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        media = STATIC_FILES.get(name)
        if media is None:
            return Response("not found", status_code=404, media_type="text/plain")
        response = FileResponse(STATIC / name, media_type=media)
        response.headers["Cache-Control"] = "no-cache"
        return response

    _offline_docs(app)
    mount_console(app, service=service, access=access)
    mount_center(app, service=service, evidence=evidence, intake=intake,
                 smtp=smtp or intake.smtp_config_provider)
