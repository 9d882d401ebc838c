"""Every absolute link we mail is on SITE_URL (config/site_url.py); the mails themselves:
tests/bookings/test_notifications.py and tests/bookings/web/test_accounts.py."""

from __future__ import annotations

import pytest

from config import site_url


@pytest.mark.parametrize(
    ("address", "scheme", "domain"),
    [
        ("https://shop.example", "https", "shop.example"),
        ("https://shop.example/", "https", "shop.example"),
        ("http://127.0.0.1:8000", "http", "127.0.0.1:8000"),
        ("https://example.com/shop/", "https", "example.com/shop"),
    ],
)
def test_a_link_is_the_site_s_address_and_the_path_either_way_it_is_built(settings, address, scheme, domain):
    settings.SITE_URL = address

    # the booking mails' way, and Django's templates' (the password reset's)
    built = site_url.absolute("/account/reset/MQ/t/")
    assert site_url.scheme_and_domain() == (scheme, domain)
    assert built == f"{scheme}://{domain}/account/reset/MQ/t/"
