"""The error responses routes declare in the OpenAPI document, in one place.

``errors(401, 403, 404)`` gives a route's (or a router's) ``responses=`` entries: each
status with the body every error leaves in (``ErrorBody``) and what it means here. A status
is listed only where the route can really answer it; the schemathesis test in
``tests/api/test_openapi_conformance.py`` holds the document to that.
"""

from __future__ import annotations

from typing import Any

from gateway.api.schemas import ErrorBody

_MEANING = {
    400: "invalid_json: the body is not a JSON object (or, for generations, the prompt or "
    "every image was refused by the content policy)",
    401: "invalid_api_key: no API key, or not a valid one",
    403: "insufficient_role (or, for generations, the licence or intended use is refused)",
    404: "the named resource does not exist (or is another tenant's)",
    409: "the resource is not in a state that allows this",
    413: "request_too_large / image_too_large: the body or an image exceeds a limit",
    422: "invalid_request: a field is missing, of the wrong type or out of range; `param` names it",
    429: "queue_full: retry after the Retry-After header's seconds",
    503: "a stage the request needs is unavailable (fail closed)",
}

Responses = dict[int | str, dict[str, Any]]

AUTHENTICATED = (401, 403)
"""What every route behind an API key can answer."""
WITH_BODY = (400, 413, 422)
"""What every route that reads a JSON body can answer."""


def errors(*codes: int) -> Responses:
    """``responses=`` entries for these error statuses, in the gateway's error shape."""
    return {
        code: {"model": ErrorBody, "description": _MEANING[code]} for code in sorted(set(codes))
    }
