"""gunicorn's access log with the client's address (gunicorn.conf.py's `logger_class`).

gunicorn's `%(h)s` is the connection's address: behind the proxy, always the proxy's. Here it is
the client's by the rule the rate limits and login lockouts use (config/network.py): with
TRUSTED_PROXY_COUNT at 0 (the default outside production) X-Forwarded-For is ignored, whoever
sent it; behind N proxies it is the entry the outermost of them wrote. Set it to the number of
proxies that append to X-Forwarded-For in front of gunicorn, and let nothing reach gunicorn but
them. (gunicorn's own `forwarded_allow_ips` governs only X-Forwarded-Proto, which Django reads
itself through SECURE_PROXY_SSL_HEADER; gunicorn never reads X-Forwarded-For.)

gunicorn's master imports this before Django is set up; a worker logs requests once its
application (and with it the settings) is loaded.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from config.network import client_address


class AccessLogger(Logger):
    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["h"] = client_address(
            environ.get("REMOTE_ADDR", "-"), environ.get("HTTP_X_FORWARDED_FOR", ""), _trusted_proxies()
        )
        return atoms


def _trusted_proxies() -> int:
    from django.conf import settings

    return settings.TRUSTED_PROXY_COUNT if settings.configured else 0
