"""Every error code maps to an HTTP status that agrees with its kind."""

from __future__ import annotations

from bastion import errors
from bastion.api._problems import STATUS, status_for


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
