"""Health endpoint and log format."""

from __future__ import annotations

import logging

import dramatiq
import pytest
import redis

from config.logging import ContextFilter, KeyValueFormatter, log_context


@pytest.mark.django_db
def test_healthz_is_200_when_database_and_broker_answer(client, broker):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": True, "broker": True}}


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_unreachable(client, monkeypatch):
    broker = dramatiq.get_broker()
    dead = redis.Redis(unix_socket_path="/nonexistent/redis.sock", socket_connect_timeout=0.2)
    monkeypatch.setattr(broker, "client", dead)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": True, "broker": False}}


def test_log_lines_are_key_value_with_the_booking_context():
    record = logging.LogRecord("partners", logging.INFO, __file__, 1, "partner call", (), None)
    record.http_status = 504
    with log_context(booking="BK-7F3K2Q", partner_key="bk-abc"):
        ContextFilter().filter(record)
    line = KeyValueFormatter().format(record)
    assert 'msg="partner call"' in line
    assert "booking=BK-7F3K2Q" in line
    assert "partner_key=bk-abc" in line
    assert "http_status=504" in line
    assert "\n" not in line


def test_log_context_is_scoped():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    with log_context(booking="BK-1"):
        pass
    ContextFilter().filter(record)
    assert "booking=" not in KeyValueFormatter().format(record)
