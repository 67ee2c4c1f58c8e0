"""Bearer tokens to principals, and role checks, for the API and the auditor page."""


import re
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from doors.api.schema import REQUEST_ID_PATTERN
from dsr.access import AccessConfig, Principal, Role
from dsr.service import DsrService

COOKIE = "dsr_token"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
BEARER_SCHEME = "Authorization: Bearer <token>"
#: Declares the scheme in the OpenAPI schema (and so in /docs' "Authorize"); the resolver below does
#: the checking, because it also reads the auditor page's cookie and must answer 401, never 403.
bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="An officer or auditor token (config/access.yaml), or a subject token.")


def request_id_or_400(request_id: str) -> str:
    """Ids become storage keys and file names: anything but plain id characters is refused."""
    if not _REQUEST_ID.match(request_id):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "request_id: not a valid request id")
    return request_id


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    # The auditor page's session cookie (HttpOnly, SameSite=Strict) works for reading only: a
    # change always needs an explicit bearer header, so a cookie can never be ridden into a write.
    if request.method in ("GET", "HEAD"):
        return request.cookies.get(COOKIE)
    return None


def principal_resolver(service: DsrService, access: AccessConfig) -> Callable[[Request], Principal]:
    def resolve(request: Request) -> Principal:
        token = _token(request)
        if not token or len(token) > 200:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        found = access.authenticate(token) or service.subject_principal(token)
        if found is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or expired token",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.token = token
        return found

    return resolve


def require(resolve: Callable[[Request], Principal], *roles: Role) -> Callable[..., Principal]:
    def check(principal: Annotated[Principal, Depends(resolve)],
              _declared: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"the {principal.role.value} role may not do this")
        return principal

    return check
