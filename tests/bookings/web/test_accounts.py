"""Accounts in the customer web client: sign up, log in (Django's views, so django-axes guards
them), log out, and the password reset, mailed through a real SMTP server."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.factories import PASSWORD

User = get_user_model()
NEW_PASSWORD = "a-new-long-password-42"


def logged_in_user(client: Client):
    return client.get("/bookings/").wsgi_request.user


# --- sign up ------------------------------------------------------------------------------------
def test_signing_up_makes_the_account_and_logs_in(client, db):
    response = client.post(
        "/account/signup/",
        {
            "username": "ada",
            "email": "ada@example.com",
            "password1": "correct-horse-battery",
            "password2": "correct-horse-battery",
            "next": "/bookings/",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == "/bookings/"
    user = User.objects.get(username="ada")
    assert user.email == "ada@example.com" and user.check_password("correct-horse-battery")
    assert logged_in_user(client) == user


def test_signing_up_never_sends_to_another_site(client, db):
    response = client.post(
        "/account/signup/",
        {
            "username": "ada",
            "email": "ada@example.com",
            "password1": "correct-horse-battery",
            "password2": "correct-horse-battery",
            "next": "https://evil.example/",
        },
    )

    assert response["Location"] == "/"


def test_a_refused_sign_up_shows_each_error_beside_its_field(client, customer):
    response = client.post(
        "/account/signup/",
        {"username": customer.username, "email": "", "password1": "short", "password2": "other"},
    )

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert errors["username"] == ["A user with that username already exists."]
    assert errors["email"] == ["This field is required."]
    assert errors["password2"] == ["The two password fields didn\N{RIGHT SINGLE QUOTATION MARK}t match."]
    page = response.content.decode()
    assert '<a href="#id_email">Email address: This field is required.</a>' in page
    assert 'id="id_email_error"' in page
    assert User.objects.count() == 1


@pytest.mark.parametrize("spelled", ["as-is", "in-capitals"])
def test_an_address_that_has_an_account_cannot_sign_up_again(client, customer, spelled):
    # Its booking mails and password resets would go to the address's owner, a stranger to it.
    email = customer.email if spelled == "as-is" else customer.email.upper()
    response = client.post(
        "/account/signup/",
        {"username": "another", "email": email, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )

    assert response.status_code == 400
    assert response.context["form"].errors["email"] == [
        "An account with this email address exists already: log in, or reset its password."
    ]
    assert User.objects.count() == 1


# --- log in and out -------------------------------------------------------------------------------
def test_logging_in_goes_where_the_customer_was_going(client, customer, offer):
    response = client.post(
        "/account/login/",
        {"username": customer.username, "password": PASSWORD, "next": f"/offers/{offer.pk}/"},
    )

    assert response.status_code == 302
    assert response["Location"] == f"/offers/{offer.pk}/"
    assert logged_in_user(client) == customer


def test_a_wrong_password_is_refused_in_the_summary(client, customer):
    response = client.post("/account/login/", {"username": customer.username, "password": "wrong"})

    assert response.status_code == 400
    page = response.content.decode()
    assert "<li>Please enter a correct username and password." in page
    assert not logged_in_user(client).is_authenticated


def test_repeated_wrong_passwords_lock_the_login(client, customer, settings):
    # given the brute-force guard's limit of failures
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/account/login/", {"username": customer.username, "password": "wrong"})

    # when the right password comes next, it is refused too
    response = client.post("/account/login/", {"username": customer.username, "password": PASSWORD})

    assert response.status_code == 429
    assert not logged_in_user(client).is_authenticated


def test_logging_out_needs_a_post_and_ends_the_session(web, customer):
    assert web.get("/account/logout/").status_code == 405

    response = web.post("/account/logout/")

    assert response["Location"] == "/"
    assert not logged_in_user(web).is_authenticated


# --- password reset, through the real SMTP sink --------------------------------------------------
@pytest.mark.integration
def test_a_password_reset_is_mailed_and_its_link_sets_a_new_password(client, customer, mail_sink, settings):
    # given the site's public address, and a request that came by another of its names (an
    # internal name or an instance's address, allowed so that the process answers it)
    settings.SITE_URL = "https://shop.example/"
    settings.ALLOWED_HOSTS = ["shop.example", "web-1.internal"]
    client.defaults["HTTP_HOST"] = "web-1.internal"

    # when the customer asks for a reset, after someone asked for an address nobody uses
    unknown = client.post("/account/password-reset/", {"email": "nobody@example.com"})
    response = client.post("/account/password-reset/", {"email": customer.email})

    # then both see the same page, and one mail (the customer's) reached the SMTP server
    assert unknown["Location"] == response["Location"] == "/account/password-reset/sent/"
    (mail,) = mail_sink.messages()
    assert mail["To"] == customer.email
    assert mail["Subject"] == "Reset your password for Bookings"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    # and its link is on the site's address, as a booking mail's is, never the name asked by
    link = re.search(r"https://shop\.example(/account/reset/[^/\s]+/[^/\s]+/)", text).group(1)
    assert f'href="https://shop.example{link}"' in html
    assert "web-1.internal" not in text + html
    assert customer.username in text

    # when the customer opens the link and chooses a new password
    form = client.get(link, follow=True)
    assert "Choose a new password" in form.content.decode()
    done = client.post(
        form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )

    # then the new password logs in, and the link works no more
    assert done["Location"] == "/account/reset/done/"
    customer.refresh_from_db()
    assert customer.check_password(NEW_PASSWORD)
    assert "This link does not work any more" in client.get(link, follow=True).content.decode()
