"""Every error code maps to an HTTP status that agrees with its kind."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from bastion import errors
from bastion.api._problems import STATUS, problem_bytes, problem_document, status_for


def test_every_error_class_has_a_fitting_status() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        if not (isinstance(cls, type) and issubclass(cls, errors.BastionError)):
            continue
        status = status_for(cls("x"))
        if issubclass(cls, errors.InputError) or cls is errors.UsageError:
            assert 400 <= status < 500, cls
        if cls.exit_code == 4:
            assert status in (401, 403, 429), cls
        if cls.exit_code == 5:
            assert status >= 500, cls
        if cls in (errors.InternalError, errors.BastionError):
            assert status == 500


def test_the_table_only_names_statuses_that_exist() -> None:
    assert set(STATUS.values()) <= {
        400,
        401,
        403,
        404,
        405,
        409,
        410,
        413,
        415,
        422,
        429,
        500,
        502,
        503,
        507,
    }


def test_raw_asgi_problems_are_encoded_as_fastapi_encodes_its_own() -> None:
    """The access layer and the gate answer before FastAPI; their bodies are the same bytes."""
    args = (429, "rate_limited", "too many requests for «med/xray»; wait 3 s")
    document = problem_document(*args, request_id="req-1", retry_after=3)
    fastapi_body = JSONResponse(document, media_type="application/problem+json").body
    assert problem_bytes(*args, request_id="req-1", retry_after=3) == fastapi_body
