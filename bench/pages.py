"""Benchmark 7, customer pages: how long the web server takes to render the offers page and a
booking's progress page with 4 clients at once, and what the progress page weighs in a browser.

Server time: gunicorn as in the Procfile (4 x 2), 4 client processes in a closed loop, each
logged in as a customer of its own (a session cookie) and reading its own booking's page: a
booking waiting for the partner (received, sent, pending: the state a progress page is watched
in), of a partner with enough confirmations this week for "how long it usually takes", beside a
full page of offers. Each request's time is gunicorn's own (`%(D)s` in its access log: from the
request read to the response written), and the client's on loopback beside it.

Page weight: Chromium (Playwright) loads the progress page through the router of `make run`
(its stream on the same origin) and every request it makes is counted with the bytes it
transferred (headers and body as sent: static files gzipped by WhiteNoise, the HTML as Django
renders it). The live stream stays open, so its bytes are not in the total (its opening is one
event of a few hundred bytes). Target: the progress page <= 100 KB transferred, scripts included.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench import common, fixtures, output, stats

NAME = "pages"
CLIENTS = 4
WARMUP_REQUESTS = 5
WEIGHT_TARGET_BYTES = 100_000
CONFIRMED_HISTORY = 30  # confirmed bookings of the partner: "how long it usually takes" is shown
OFFERS = 10  # a full page of them
ACCESS_LOG_FORMAT = "access %(U)s %(s)s %(D)s"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass(frozen=True)
class Config:
    requests_each: int


FULL = Config(requests_each=250)
QUICK = Config(requests_each=10)


# --- data ---------------------------------------------------------------------------------------
def _moved(booking_id: Any, *moves: str) -> None:
    from django.db import transaction

    from bookings import services
    from bookings.models import Actor

    for move in moves:
        with transaction.atomic():
            services.apply_transition(services.lock_booking(booking_id), move, actor=Actor.WORKER)


def _booking(customer: Any, offer: Any, *moves: str) -> Any:
    from bookings.services import BookingRequest, booking_create

    start, end = fixtures.stay_dates()
    request = BookingRequest(offer_id=offer.pk, start_date=start, end_date=end, guests=2)
    booking = booking_create(customer=customer, request=request, idempotency_key=uuid.uuid4().hex).booking
    _moved(booking.pk, *moves)
    return booking


def _session(user: Any) -> str:
    """A logged-in session of `user` (in the database, as the web server keeps them): its cookie."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@dataclass(frozen=True)
class Reader:
    """One client: its session and its booking's progress page."""

    cookie: str
    progress_path: str


def readers(offer: Any) -> list[Reader]:
    waiting = ("start_submission", "mark_partner_pending")
    history = fixtures.customers(1, prefix="history")[0][0]
    for _ in range(CONFIRMED_HISTORY):
        _booking(history, offer, *waiting, "confirm")
    return [
        Reader(_session(user), f"/bookings/{_booking(user, offer, *waiting).reference}/")
        for user, _ in fixtures.customers(CLIENTS, prefix="reader")
    ]


def collect_static(env: common.BenchEnv) -> None:
    """What production serves: the static files collected and gzipped (WhiteNoise serves them)."""
    subprocess.run(
        [common.PYTHON, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=common.ROOT,
        env=env.child_env(),
        check=True,
    )


# --- server time ----------------------------------------------------------------------------------
def _reader(base: str, path: str, cookie: str, requests_each: int, barrier: Any, results: Any) -> None:
    import requests

    session = requests.Session()
    session.headers["Cookie"] = cookie
    samples = []
    for _ in range(WARMUP_REQUESTS):
        session.get(base + path, timeout=60)
    barrier.wait()
    for _ in range(requests_each):
        start = time.perf_counter()
        response = session.get(base + path, timeout=60)
        samples.append((time.perf_counter() - start, response.status_code, len(response.content)))
    results.put(samples)


def read_pages(
    base: str, paths: list[str], cookies: list[str], requests_each: int
) -> list[tuple[float, int, int]]:
    """Client i reads `paths[i]` with the Cookie header `cookies[i]`, `requests_each` times after
    a warm-up, all starting together: (seconds, status, bytes) of every request."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(paths)), ctx.Queue()
    procs = [
        ctx.Process(target=_reader, args=(base, path, cookie, requests_each, barrier, results), daemon=True)
        for path, cookie in zip(paths, cookies, strict=True)
    ]
    for proc in procs:
        proc.start()
    samples = []
    for _ in procs:
        samples += results.get(timeout=600)
    for proc in procs:
        proc.join(30)
    return samples


def server_times(log: str, path_prefix: str, count: int) -> list[float]:
    """The last `count` durations (s) gunicorn logged for paths starting with `path_prefix`
    (`ACCESS_LOG_FORMAT`); the warm-up came before them."""
    durations = []
    for line in log.splitlines():
        if line.startswith("access "):
            _, path, _, micros = line.split(" ")
            if path == path_prefix or (path_prefix != "/" and path.startswith(path_prefix)):
                durations.append(int(micros) / 1e6)
    return durations[-count:]


def measure_times(web: common.Proc, base: str, people: list[Reader], config: Config) -> dict[str, Any]:
    pages = {
        "offers": (["/"] * CLIENTS, "/"),
        "progress": ([reader.progress_path for reader in people], "/bookings/"),
    }
    from django.conf import settings

    cookies = [f"{settings.SESSION_COOKIE_NAME}={reader.cookie}" for reader in people]
    result = {}
    for name, (paths, prefix) in pages.items():
        cpu = web.cpu_seconds()
        samples = read_pages(base, paths, cookies, config.requests_each)
        statuses: dict[str, int] = {}
        for _, status, _ in samples:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        server = server_times(web.log(), prefix, len(samples))
        result[name] = {
            "requests": len(samples),
            "statuses": statuses,
            "html_bytes": samples[-1][2],
            "server": stats.latency_summary_ms(server),
            "client": stats.latency_summary_ms([seconds for seconds, _, _ in samples]),
            "web_cpu_ms_per_request": round((web.cpu_seconds() - cpu) / len(samples) * 1000, 2),
        }
    return result


# --- page weight ------------------------------------------------------------------------------------
def page_weight(base: str, path: str, cookie: str, *, follows_stream: bool) -> dict[str, Any]:
    """What Chromium transfers to show `path` (logged in with `cookie`): each request it made
    and finished, with its bytes (response headers and body as transferred, and decoded)."""
    from django.conf import settings
    from playwright.sync_api import sync_playwright

    # In the order the page asked (the document first): a small stylesheet can finish before the
    # document it was named in has been read to its end.
    asked, finished = [], set()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context()
            context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base}])
            page = context.new_page()
            page.on("request", lambda request: asked.append(request))
            page.on("requestfinished", lambda request: finished.add(request))
            stream_status = None
            if follows_stream:
                with page.expect_response(lambda response: response.url.endswith("/events")) as stream:
                    page.goto(base + path, wait_until="load")
                stream_status = stream.value.status
            else:
                page.goto(base + path, wait_until="load")
            page.wait_for_timeout(1000)  # anything the page asks for after its load event
            resources = []
            for request in (request for request in asked if request in finished):
                sizes, response = request.sizes(), request.response()
                resources.append(
                    {
                        "path": request.url.removeprefix(base),
                        "type": request.resource_type,
                        "status": response.status if response else None,
                        "encoding": (response.headers.get("content-encoding", "") if response else ""),
                        "transferred": sizes["responseHeadersSize"] + sizes["responseBodySize"],
                        "body": sizes["responseBodySize"],
                        "decoded": len(response.body()) if response else 0,
                    }
                )
        finally:
            browser.close()
    return {
        "resources": resources,
        "transferred_bytes": sum(r["transferred"] for r in resources),
        "decoded_bytes": sum(r["decoded"] for r in resources),
        "stream_status": stream_status,
    }


def run(quick: bool = False) -> dict[str, Any]:
    config = QUICK if quick else FULL
    with common.BenchEnv(NAME) as env:
        collect_static(env)
        _, offer = fixtures.bench_partner(base_url="http://127.0.0.1:9/unused", webhooks=False, offers=OFFERS)
        people = readers(offer)
        web, base = env.start_web(access_log_format=ACCESS_LOG_FORMAT)
        started = common.now_iso()
        times = measure_times(web, base, people, config)
        events, events_base = env.start_events()
        router, router_base = env.start_router(web=base, events=events_base)
        reader = people[0]
        weight = {
            "progress": page_weight(router_base, reader.progress_path, reader.cookie, follows_stream=True),
            "offers": page_weight(router_base, "/", reader.cookie, follows_stream=False),
        }
        for proc in (router, events, web):
            env.stop(proc)
        data = {
            "benchmark": NAME,
            "started_at": started,
            "quick": quick,
            "machine": env.machine(),
            "setup": {
                "web": "gunicorn config.wsgi --workers 4 --threads 2 (as in the Procfile)",
                "clients": f"{CLIENTS} processes, closed loop, one logged-in customer each",
                "requests_each": config.requests_each,
                "offers": OFFERS,
                "confirmed_history": CONFIRMED_HISTORY,
                "browser": "Chromium (Playwright) through the router, static files collected",
                "weight_target_bytes": WEIGHT_TARGET_BYTES,
            },
            "times": times,
            "weight": weight,
            "target_met": weight["progress"]["transferred_bytes"] <= WEIGHT_TARGET_BYTES,
        }
    report(data)
    return data


def time_rows(data: dict[str, Any]) -> list[list[Any]]:
    return [
        [f"{name} page", row["requests"], row["server"]["p50_ms"], row["server"]["p99_ms"],
         row["client"]["p50_ms"], row["client"]["p99_ms"], row["web_cpu_ms_per_request"], row["html_bytes"]]
        for name, row in data["times"].items()
    ]  # fmt: skip


def weight_rows(data: dict[str, Any], page: str = "progress") -> list[list[Any]]:
    weight = data["weight"][page]
    rows = [
        [r["path"], r["type"], r["status"], r["encoding"] or "none", r["transferred"], r["decoded"]]
        for r in weight["resources"]
    ]
    return [*rows, ["total", "", "", "", weight["transferred_bytes"], weight["decoded_bytes"]]]


def report(data: dict[str, Any], *, results_dir: Any = None, img_dir: Any = None) -> None:
    output.print_table(
        f"Customer pages, {CLIENTS} clients: server time (gunicorn) and client time (loopback), ms",
        [
            "page",
            "requests",
            "server p50",
            "server p99",
            "client p50",
            "client p99",
            "web CPU ms",
            "HTML bytes",
        ],
        time_rows(data),
    )
    output.print_table(
        "The progress page in Chromium: every request and its bytes",
        ["request", "type", "status", "encoding", "transferred", "decoded"],
        weight_rows(data),
    )
    output.write_json(NAME, data, **({"results_dir": results_dir} if results_dir else {}))
    plot(data, img_dir=img_dir)


def plot(data: dict[str, Any], *, img_dir: Any = None) -> None:
    plt = output.pyplot()
    fig, (times, weight) = plt.subplots(1, 2, figsize=(12, 4))
    names = list(data["times"])
    for offset, (side, quantile) in zip(
        (-0.3, -0.1, 0.1, 0.3),
        (("server", "p50_ms"), ("server", "p99_ms"), ("client", "p50_ms"), ("client", "p99_ms")),
        strict=True,
    ):
        values = [data["times"][name][side][quantile] for name in names]
        bars = times.bar([i + offset for i in range(len(names))], values, 0.2, label=f"{side} {quantile[:3]}")
        times.bar_label(bars, fmt="%.0f", fontsize=8)
    times.set_xticks(range(len(names)), [f"{name} page" for name in names])
    times.set_ylabel("ms")
    times.set_title(f"{CLIENTS} clients at once")
    times.legend(fontsize=8)

    progress = data["weight"]["progress"]
    bottom = 0.0
    for resource in progress["resources"]:
        kb = resource["transferred"] / 1000
        weight.bar(["progress page"], [kb], bottom=bottom, label=f"{resource['path'][:40]} ({kb:.1f} KB)")
        bottom += kb
    weight.axhline(WEIGHT_TARGET_BYTES / 1000, color="grey", linestyle="--", label="target")
    weight.set_ylabel("KB transferred")
    weight.set_title(f"Progress page in Chromium: {progress['transferred_bytes'] / 1000:.1f} KB")
    weight.legend(fontsize=7, loc="upper right")
    output.save_figure(fig, NAME, **({"img_dir": img_dir} if img_dir else {}))
