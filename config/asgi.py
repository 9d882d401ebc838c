"""The ASGI entry point: the events process (`python -m config.events`, uvicorn) serves the live
status streams (bookings/streams) with it. Everything else is the web process's (config/wsgi.py).

Django answers HTTP; the lifespan messages start the process's stream hub and, at shutdown, end
every open stream so that the server is not held up by them (their clients reconnect).
"""

import asyncio
import gc
import os
import signal

from django.core.asgi import get_asgi_application

from config import env_file

env_file.load()  # DJANGO_SETTINGS_MODULE may come from .env
# Unset, a server runs production's settings, which refuse to start on the development defaults:
# a deploy that forgets the variable must not serve DEBUG pages under the public dev SECRET_KEY.
# `make run` (config/devstack.py), the tests, the benchmarks and the chaos run name theirs.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
django_application = get_asgi_application()

from bookings.streams.hub import hub  # noqa: E402 - needs the apps loaded


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await django_application(scope, receive, send)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            hub.start()
            _end_streams_on_shutdown_signals()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await hub.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _end_streams_on_shutdown_signals() -> None:
    """The server waits for every open response to finish before it sends `lifespan.shutdown`,
    and a stream does not finish by itself: so when the server's own shutdown signal arrives,
    the hub ends the streams too, then the server's handler runs as before."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        server_handler = signal.getsignal(signum)

        def handler(signum: int, frame: object, server_handler=server_handler) -> None:
            loop.call_soon_threadsafe(hub.end_streams)
            if callable(server_handler):
                server_handler(signum, frame)

        signal.signal(signum, handler)


# As in config/wsgi.py: what start-up built lives as long as the process; keep it out of the
# collector's generations.
gc.collect()
gc.freeze()
