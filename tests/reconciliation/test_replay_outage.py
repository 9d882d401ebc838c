"""`replay_inbound_event` stopped part way by a PostgreSQL that goes away (the test's own, never
the machine's): the replays done before it are kept beside the error in --json, the error says
where the run stopped and the token to run it again by, and that run replays the rest only.

Before, only `ApplicationError` was caught in its loop: the database's error went up to
`JsonCommand`, which printed the outage's line and, with --json, the error alone. The replays
already done and the generated token were lost, so the run could not be repeated safely.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from config.commands import OUTAGE_STATUS
from tests.helpers import wait_until
from tests.own_servers import ROOT, OwnPostgres, own_redis

IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

# Three stored deliveries a partner signed, each for a booking waiting on it; their ids printed.
SETUP = """
import json
from datetime import UTC, datetime
from standardwebhooks.webhooks import Webhook
from partners.models import InboundState
from tests.factories import BookingFactory, InboundEventFactory, OfferFactory, PartnerFactory

partner = PartnerFactory(code="replayed")
ids = []
for n in range(3):
    booking = BookingFactory(offer=OfferFactory(partner=partner), status="pending_partner")
    data = {"id": f"R-hook-{n}", "client_reference": booking.reference, "status": "confirmed", "version": 2}
    body = json.dumps({"type": "reservation.updated", "timestamp": "2027-02-01T10:15:32+00:00", "data": data})
    now, event_id = datetime.now(tz=UTC), f"msg_replay_{n}"
    headers = {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(partner.webhook_secret).sign(event_id, now, body),
    }
    event = InboundEventFactory(
        partner=partner, raw_body=body.encode(), event_id=event_id, state=InboundState.FAILED, headers=headers
    )
    ids.append(str(event.pk))
print(" ".join(ids))
"""


@pytest.fixture
def own_stores(tmp_path: Path) -> Iterator[tuple[OwnPostgres, dict[str, str]]]:
    """A PostgreSQL and a Redis of the test's own, migrated; the environment of commands run on them."""
    database, queue = OwnPostgres("replay").init(), own_redis(tmp_path / "redis")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database.url,
        "REDIS_URL": queue.url,
    }
    try:
        _manage(env, "migrate", "--noinput", "-v0")
        yield database, env
    finally:
        database.destroy()
        queue.stop()


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as connection:
        waiting = connection.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
    return bool(waiting and waiting[0])


@pytest.mark.skipif(not IS_POSTGRES, reason="the PostgreSQL outage is proven in the PostgreSQL run")
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_a_database_gone_part_way_keeps_the_replays_done_and_the_token_to_run_it_again(own_stores, as_json):
    database, env = own_stores
    first, second, third = _manage(env, "shell", "-c", SETUP).strip().splitlines()[-1].split()
    # The second delivery's row held by another session: the run replays the first, then waits on it.
    holder = psycopg.connect(database.url)
    holder.execute("SELECT id FROM partners_inboundevent WHERE id = %s FOR UPDATE", [int(second)])
    run = subprocess.Popen(
        [sys.executable, "manage.py", "replay_inbound_event", first, second, third,
         *(["--json"] if as_json else [])],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: _waiting_on_a_lock(database.url), what="the run waiting on the second", timeout_s=60
        )
        database.stop()  # fast shutdown: every session is cut, the run's and the holder's
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
        holder.close()

    assert run.returncode == OUTAGE_STATUS, err  # an outage: try again, not a refusal
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        f"CommandError: inbound event #{second}: the run stopped here, 1 after it not tried"
    )
    assert "The database is not answering (OperationalError:" in line
    if as_json:
        printed = json.loads(out)
        [done] = printed["results"]
        assert (done["inbound_event"], done["performed"]) == (int(first), True)
        assert printed["error"]["code"] == "service_unavailable"
        assert printed["error"]["message"] == line.removeprefix("CommandError: ")
        token = printed["token"]
    else:
        assert "msg_replay_0" in out and "Replayed" in out  # the table of what it did before
        token = line.rsplit("--token ", 1)[1].split(":", 1)[0]
    assert f"Run the same command again with --token {token}:" in line

    # Run again with its token once the database is back: the first is not replayed twice.
    database.start()
    again = json.loads(_manage(env, "replay_inbound_event", first, second, third, "--json", "--token", token))
    performed = {row["inbound_event"]: row["performed"] for row in again["results"]}
    assert performed == {int(first): False, int(second): True, int(third): True}
