"""`manage.py support_groups`: the console's staff groups on a real deployment, without the demo
data's users, and the table in docs/console.md is what they get."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command

from reconciliation.services.support.groups import GROUP_PERMISSIONS

CONSOLE_DOC = Path(__file__).resolve().parents[2] / "docs" / "console.md"


def permissions_of(name: str) -> set[str]:
    group = Group.objects.get(name=name)
    return {
        f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")
    }


def test_it_makes_the_groups_with_their_permissions_and_no_user(db, settings):
    settings.DEBUG = False  # production: unlike the demo data, it runs
    out = StringIO()

    call_command("support_groups", "--json", stdout=out)

    assert json.loads(out.getvalue()) == GROUP_PERMISSIONS
    assert permissions_of("support") == set(GROUP_PERMISSIONS["support"])
    assert permissions_of("ops") == set(GROUP_PERMISSIONS["ops"])
    assert get_user_model().objects.count() == 0


def test_run_again_it_sets_a_group_s_permissions_back(db):
    call_command("support_groups", stdout=StringIO())
    support = Group.objects.get(name="support")
    support.permissions.clear()

    call_command("support_groups", stdout=StringIO())

    assert permissions_of("support") == set(GROUP_PERMISSIONS["support"])
    assert Group.objects.filter(name__in=["support", "ops"]).count() == 2


def test_the_console_doc_s_table_is_what_the_groups_get():
    """Every permission the table names for a group is that group's, and no other."""
    rows = re.findall(r"^\| [^|]+ \| (.+) \| ([a-z, ]+) \|$", CONSOLE_DOC.read_text(), flags=re.MULTILINE)
    documented: dict[str, set[str]] = {"support": set(), "ops": set()}
    for permissions, groups in rows:
        for group in (g.strip() for g in groups.split(",")):
            if group in documented:
                documented[group] |= set(re.findall(r"`([a-z_]+\.[a-z_]+)`", permissions))

    assert documented["support"] <= set(GROUP_PERMISSIONS["support"])
    assert documented["ops"] <= set(GROUP_PERMISSIONS["ops"])
    assert documented["support"] and documented["ops"]
