"""`/api/schema/?version=`: drf-spectacular writes it into the Content-Disposition header, so a
version is checked first (config/schema.py). Before, a control character was a 500 under
gunicorn (which refuses such a header; tests/config/test_gunicorn.py) and a quote a broken header."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from config.schema import NOT_A_VERSION

# What a header's quoted filename may hold without breaking it or the header line.
SAFE_DISPOSITION = re.compile(r'inline; filename="[^"\x00-\x1f\x7f]*"')


@pytest.mark.parametrize(
    "version",
    ["\x00", "a\r\nX:1", "\t", 'x"', "a b", "é", "", "-1", "1" * 33, "\x7f"],
    ids=["nul", "crlf", "tab", "quote", "space", "non-ascii", "empty", "leading-dash", "too-long", "del"],
)
def test_a_version_outside_the_pattern_is_a_400_in_the_one_error_shape(db, version):
    response = APIClient().get("/api/schema/", {"version": version})

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The request is invalid.",
            "fields": {"version": [NOT_A_VERSION]},
        }
    }
    assert not response.has_header("Content-Disposition")


@pytest.mark.parametrize("version", [None, "1.0.0", "v2", "2024-01_beta", "9" * 32])
@pytest.mark.parametrize("format_", ["json", "yaml"])
def test_an_accepted_version_names_the_schema_in_a_well_formed_header(db, version, format_):
    query = {"format": format_} | ({"version": version} if version is not None else {})
    response = APIClient().get("/api/schema/", query)

    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert SAFE_DISPOSITION.fullmatch(disposition), disposition
    assert disposition.endswith(f'{f" ({version})" if version else ""}.{format_}"')
