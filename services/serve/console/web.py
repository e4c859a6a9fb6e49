"""The console's shell: templates, sign-in with an API key kept in a cookie, errors as pages.

Every page is rendered on the server (Jinja2); htmx swaps parts of a page (an extraction's
result, a job's progress) without a JavaScript application. A key is entered once on the login
page and kept in an HttpOnly, SameSite=Strict cookie scoped to /console, so other sites can
neither read it nor make the browser send it. Pages check the key's scopes as the API does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from shared.api import ApiKey, KeyScope, granted_scopes
from shared.store import Store

if TYPE_CHECKING:
    from services.serve.gateway import Gateway

CONSOLE_PATH = "/console"
KEY_COOKIE = "tiqu_console_key"
# A working day: a console left open overnight asks for its key again.
KEY_COOKIE_MAX_AGE_S = 12 * 3600
TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
STATIC = Path(__file__).with_name("static")


def _when(value: str | datetime | None) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM:SS` (UTC), or a dash."""
    if value is None or value == "":
        return "–"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text[:19].replace("T", " ")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["pct"] = _pct


@dataclass(frozen=True)
class Visitor:
    """Who is looking: the scopes of the key they signed in with (all of them when the gateway
    has no keys, as on a developer's loopback)."""

    scopes: frozenset[KeyScope]
    signed_in: bool

    def can(self, scope: KeyScope) -> bool:
        return scope in self.scopes


class LoginRequired(Exception):
    """No key, or a key the gateway does not know: the visitor goes to the login page."""


class PageError(Exception):
    """Shown to the visitor as a page (or, inside a page, as its message) with `status`."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def console_keys(request: Request) -> tuple[ApiKey, ...]:
    keys: tuple[ApiKey, ...] = request.app.state.api_keys
    return keys


def visitor(request: Request) -> Visitor:
    keys = console_keys(request)
    if not keys:
        found = Visitor(frozenset(KeyScope), signed_in=False)
    else:
        presented = request.cookies.get(KEY_COOKIE, "").encode("utf-8")
        granted = granted_scopes(presented, keys) if presented else None
        if granted is None:
            raise LoginRequired
        found = Visitor(granted, signed_in=True)
    request.state.visitor = found
    return found


VisitorDep = Annotated[Visitor, Depends(visitor)]


def require(visitor: Visitor, scope: KeyScope, what: str) -> None:
    """Refuse the page (403) unless the visitor's key has `scope`."""
    if not visitor.can(scope):
        raise PageError(
            403, "Not allowed", f"This key lacks the '{scope.value}' scope that {what} needs."
        )


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise PageError(503, "Starting", "The gateway is starting; reload in a moment.")
    return gateway


def store_of(_: Request) -> Store:
    return Store.from_settings()


StoreDep = Annotated[Store, Depends(store_of)]


def is_htmx(request: Request) -> bool:
    """An htmx request wants a fragment of a page, not a whole page."""
    return request.headers.get("hx-request") == "true"


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render `template` with the visitor and `context`."""
    context.setdefault("visitor", getattr(request.state, "visitor", None))
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only, never another site (`//evil`)."""
    if target and target.startswith(CONSOLE_PATH) and not target.startswith("//"):
        return target
    return f"{CONSOLE_PATH}/playground"


router = APIRouter(prefix=CONSOLE_PATH, include_in_schema=False)


@router.get("")
def home() -> RedirectResponse:
    return RedirectResponse(f"{CONSOLE_PATH}/playground", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return page(request, "login.html", next=_safe_next(next), failed=False)


@router.post("/login")
def login(
    request: Request,
    key: Annotated[str, Form(max_length=4096)] = "",
    next: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    keys = console_keys(request)
    if keys and granted_scopes(key.strip().encode("utf-8"), keys) is None:
        return page(request, "login.html", status_code=401, next=_safe_next(next), failed=True)
    response = RedirectResponse(_safe_next(next), status_code=303)
    if keys:
        response.set_cookie(
            KEY_COOKIE,
            key.strip(),
            max_age=KEY_COOKIE_MAX_AGE_S,
            path=CONSOLE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


@router.post("/logout")
def logout() -> RedirectResponse:
    response = RedirectResponse(f"{CONSOLE_PATH}/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path=CONSOLE_PATH)
    return response


not_found_router = APIRouter(prefix=CONSOLE_PATH, include_in_schema=False)


@not_found_router.get("/{rest:path}")
def not_found(request: Request, _: VisitorDep) -> HTMLResponse:
    raise PageError(404, "Not found", "There is no console page at this address.")


def _login_required(request: Request, _: Exception) -> Response:
    target = f"{CONSOLE_PATH}/login?next={quote(request.url.path)}"
    if is_htmx(request):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    template = "message.html" if is_htmx(request) else "error.html"
    return page(request, template, status_code=exc.status, title=exc.title, message=exc.message)


def mount_console(app: FastAPI, pages: list[APIRouter]) -> None:
    """Serve the console at /console: sign-in, `pages`, static files, and a 404 page for the
    rest. The app must hold its keys in `app.state.api_keys` (create_app puts them there)."""
    app.include_router(router)
    for page_router in pages:
        app.include_router(page_router)
    app.mount(f"{CONSOLE_PATH}/static", StaticFiles(directory=STATIC), name="console-static")
    app.include_router(not_found_router)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(PageError, _page_error)
