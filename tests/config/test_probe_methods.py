"""The methods the probes and `/metrics` answer. A load balancer's check is often a HEAD (or,
HAProxy's `option httpchk` unless told otherwise, an OPTIONS), and `curl -I` is a HEAD: before,
`require_GET` answered each of them 405 with an empty text/html body, so a load balancer
probing `/readyz` that way saw every instance down. A HEAD is answered as the GET, without the
body; the probes answer OPTIONS as their GET too, with `Allow` (so an OPTIONS check sees 503
for an instance that is not ready); any other method is a 405 in the one error shape."""

from __future__ import annotations

import pytest

from tests.config.test_probes import database_unreachable, fresh  # noqa: F401 - fixtures

PROBES = ("/livez", "/readyz", "/healthz")
TOKEN = "m" * 40


@pytest.mark.django_db
@pytest.mark.parametrize("path", PROBES)
def test_head_on_a_probe_is_its_get_without_the_body(client, broker, fresh, path):  # noqa: F811
    head = client.head(path)

    assert head.status_code == 200, head.content
    assert head.content == b"" and head["Content-Type"] == "application/json"


@pytest.mark.django_db
@pytest.mark.parametrize("path", PROBES)
def test_options_on_a_probe_answers_as_its_get_with_allow(client, broker, fresh, path):  # noqa: F811
    answer = client.options(path)

    assert answer.status_code == 200
    assert answer["Allow"] == "GET, HEAD, OPTIONS"
    assert answer.json()["status"] == "ok"


@pytest.mark.django_db
def test_options_on_readyz_fails_as_its_get_without_a_database(
    client,
    broker,
    fresh,  # noqa: F811
    database_unreachable,  # noqa: F811
):
    head, options = client.head("/readyz"), client.options("/readyz")

    assert (head.status_code, options.status_code) == (503, 503)
    assert options["Retry-After"] and options["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.django_db
@pytest.mark.parametrize("path", PROBES)
def test_another_method_on_a_probe_is_a_405_in_the_error_shape(client, path):
    answer = client.delete(path)

    assert answer.status_code == 405
    assert answer["Allow"] == "GET, HEAD, OPTIONS"
    assert answer.json() == {
        "error": {"code": "method_not_allowed", "message": 'Method "DELETE" not allowed.'}
    }


@pytest.mark.django_db
def test_head_on_the_metrics_is_the_scrape_without_the_body(client, broker, settings):
    settings.METRICS_OPEN, settings.METRICS_TOKEN = False, TOKEN
    authorized = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}

    head = client.head("/metrics", **authorized)

    assert head.status_code == 200 and head.content == b""
    assert head["Content-Type"].startswith("text/plain; version=0.0.4")
    assert client.head("/metrics").status_code == 401  # the token is asked of a HEAD too


@pytest.mark.django_db
def test_a_write_to_the_metrics_is_a_405_in_the_error_shape(client, settings):
    settings.METRICS_OPEN, settings.METRICS_TOKEN = False, TOKEN

    answer = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert answer.status_code == 405 and answer["Allow"] == "GET, HEAD"
    assert answer.json()["error"]["code"] == "method_not_allowed"
