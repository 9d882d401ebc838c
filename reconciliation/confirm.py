"""The support console's confirmed POST, one shape for every action's page: run the service,
then back to the page the action came from with what it did.

The service checks the permission again under its locks: its refusal is a 403, as if the page
had refused it. Any other refusal is said on the page it returns to, or, when it names the form's
fields and the caller passes its form, put on that form for the page to show again. A refused
token (missing, too long, or already used for another ask) is said on the form
(`_hidden_errors.html`), which gets a fresh one to confirm with (`token_to_keep`, `show_token`);
so is any other hidden value the page carried from its preview, which gets this preview's
(`show_previewed`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from config.errors import ApplicationError
from reconciliation.services.support import SupportActionDenied


class Performed(Protocol):
    @property
    def performed(self) -> bool: ...  # False: a double submit, nothing was done


R = TypeVar("R", bound=Performed)


def run_confirmed(
    request: HttpRequest,
    run: Callable[[], R],
    *,
    title: str,
    back_to: str,
    told: Callable[[R], str],
    form: forms.Form | None = None,
) -> HttpResponse | None:
    """Run the action and redirect to `back_to` with `told(result)` (a warning when nothing was
    done) or the refusal. None: the refusal is on `form`, to render again."""
    try:
        result = run()
    except SupportActionDenied as exc:
        raise PermissionDenied(exc.message) from exc
    except ApplicationError as exc:
        if form is not None and exc.fields:
            for name, errors in exc.fields.items():
                form.add_error(name if name in form.fields else None, errors)
            return None
        messages.error(request, f"{title}: {exc.message}")
        return HttpResponseRedirect(back_to)
    messages.add_message(request, messages.SUCCESS if result.performed else messages.WARNING, told(result))
    return HttpResponseRedirect(back_to)


def token_to_keep(form: forms.Form) -> str | None:
    """The posted token to confirm with again, or None when it was refused: the preview then makes
    a fresh one, since the refused one would never pass."""
    return None if "token" in form.errors else form.data.get("token")


def show_token(form: forms.Form, token: str) -> None:
    """Put the preview's token on a form rendered again (a fresh one after a refusal)."""
    if form.data.get("token") != token:
        form.data = form.data.copy()
        form.data["token"] = token


def show_previewed(form: forms.Form, **values: str) -> None:
    """Put the preview's values on the hidden fields a form rendered again refused (a stale or
    altered page): the page says the refusal, and confirming again asks what the page shows."""
    refused = {name: value for name, value in values.items() if name in form.errors}
    if refused:
        form.data = form.data.copy()
        for name, value in refused.items():
            form.data[name] = value
