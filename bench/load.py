"""An HTTP load generator: C clients, each a process with one `requests.Session`, each sending
N requests. Processes, not threads, so that one client's GIL does not add to another's latency;
the clients start together on a barrier after a short warm-up.

Closed loop by default (each client sends its next request when the last one is answered: the
server's throughput). Paced with `rate_per_s` (the whole load's fixed offered rate, spread over
the clients): a client sends on its schedule, and a request's latency counts from the moment it
was due, so a stalled server shows as latency instead of as fewer requests.

A paced request is sent when it is due, on one of the client's sender threads, whether or not
the client's previous request has been answered: customers arrive independently, and one does
not wait for another's answer before sending. (With a single sender, a request due while the
previous one was in flight was counted with that one's remaining time: at 2.5 requests a second
per client and ~20 ms answers, about one request in ten, and half of the slowest 1%, so the p99
measured two requests' time.) A request still waits, and that wait counts, when every sender of
its client is busy: a stalled server cannot hide.

A paced schedule is either `uniform` (evenly spaced) or `poisson` (independent arrivals, as
customers arrive: exponential gaps with the same mean, seeded so a run can be repeated). Evenly
spaced requests can fall into step with work they cause themselves (a booking's pipeline runs
in the gap before the next request), which random arrivals do not.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

WARMUP_REQUESTS = 5
ARRIVALS = ("uniform", "poisson")
SENDERS_PER_CLIENT = 8  # paced: requests one client can have in flight at once


def _check_arrivals(arrivals: str) -> None:
    if arrivals not in ARRIVALS:
        raise ValueError(f"arrivals must be one of {', '.join(ARRIVALS)}, not {arrivals!r}")


def due_offsets(requests: int, interval_s: float, arrivals: str, seed: int) -> list[float]:
    """When each of a client's paced requests is due, in seconds from its start."""
    _check_arrivals(arrivals)
    if arrivals == "uniform":
        return [index * interval_s for index in range(requests)]
    rng = random.Random(seed)
    offsets, due = [], 0.0
    for _ in range(requests):
        offsets.append(due)
        due += rng.expovariate(1 / interval_s)
    return offsets


@dataclass(frozen=True)
class Endpoint:
    """What to POST: a path, a JSON body and the status that means success."""

    name: str
    path: str
    body: dict[str, Any]
    ok_status: int
    idempotency_key: bool = False


@dataclass
class LoadResult:
    endpoint: str
    clients: int
    requests_each: int
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


def _client(
    base: str,
    endpoint: Endpoint,
    tokens: list[str],
    requests_each: int,
    barrier: Any,
    results: Any,
    interval_s: float | None = None,
    offset_s: float = 0.0,
    arrivals: str = "uniform",
    seed: int = 0,
    senders: int = SENDERS_PER_CLIENT,
) -> None:
    import requests

    # One session (its kept-alive connection) per sending thread: a Session is not thread-safe.
    sessions = threading.local()

    def session() -> requests.Session:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        return sessions.session

    failures: list[str] = []

    def post(index: int, due: float | None = None) -> tuple[float, float, int]:
        headers = {"Authorization": f"Token {tokens[index % len(tokens)]}"}
        if endpoint.idempotency_key:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        start = time.perf_counter() if due is None else due
        try:
            response = session().post(
                f"{base}{endpoint.path}", json=endpoint.body, headers=headers, timeout=60
            )
            status = response.status_code
            if status != endpoint.ok_status and len(failures) < 3:
                failures.append(f"{status}: {response.text[:300]}")
        except requests.RequestException as exc:
            status = -1
            if len(failures) < 3:
                failures.append(f"-1: {exc!r}"[:300])
        return start, time.perf_counter(), status

    for index in range(WARMUP_REQUESTS):
        post(index)
    barrier.wait()
    if interval_s is None:
        samples = [post(index) for index in range(requests_each)]
    else:
        begin = time.perf_counter() + offset_s
        sent = []
        with ThreadPoolExecutor(max_workers=senders, thread_name_prefix="sender") as pool:
            for index, offset in enumerate(due_offsets(requests_each, interval_s, arrivals, seed)):
                due = begin + offset
                time.sleep(max(0.0, due - time.perf_counter()))
                sent.append(pool.submit(post, index, due))
            samples = [future.result() for future in sent]
    results.put((samples, failures))


CLIENT_TIMEOUT_S = 600.0


def _client_results(results: Any, procs: list[Any], *, timeout_s: float) -> list[tuple[list, list]]:
    """Each client's results; a clear error as soon as a client process dies without them
    (rather than waiting out the timeout for an answer that cannot come)."""
    collected: list[tuple[list, list]] = []
    deadline = time.monotonic() + timeout_s
    while len(collected) < len(procs):
        try:
            collected.append(results.get(timeout=0.5))
            continue
        except queue.Empty:
            pass
        alive = sum(1 for proc in procs if proc.exitcode is None)
        if alive < len(procs) - len(collected):
            codes = [proc.exitcode for proc in procs if proc.exitcode not in (None, 0)]
            raise RuntimeError(f"a load client process died without its results (exit codes {codes})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"load clients gave no results within {timeout_s:.0f} s")
    return collected


def run_load(
    base: str,
    endpoint: Endpoint,
    *,
    tokens: list[list[str]],
    requests_each: int,
    rate_per_s: float | None = None,
    arrivals: str = "uniform",
    seed: int = 0,
    senders_per_client: int = SENDERS_PER_CLIENT,
) -> LoadResult:
    """`len(tokens)` clients; client i cycles through the customer tokens `tokens[i]`. With
    `rate_per_s`, paced: together the clients offer that many requests a second, `uniform`ly
    (taking turns) or as `poisson` arrivals (each client its own seeded stream), each client
    with up to `senders_per_client` requests in flight."""
    _check_arrivals(arrivals)
    ctx = multiprocessing.get_context("spawn")
    clients = len(tokens)
    interval_s = clients / rate_per_s if rate_per_s else None
    barrier = ctx.Barrier(clients)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_client,
            args=(base, endpoint, tokens[i], requests_each, barrier, results),
            kwargs={
                "interval_s": interval_s,
                "offset_s": (interval_s or 0.0) * i / clients,
                "arrivals": arrivals,
                "seed": seed * 1000 + i,
                "senders": senders_per_client,
            },
            daemon=True,
        )
        for i in range(clients)
    ]
    for proc in procs:
        proc.start()
    samples: list[tuple[float, float, int]] = []
    failures: list[str] = []
    for client_samples, client_failures in _client_results(results, procs, timeout_s=CLIENT_TIMEOUT_S):
        samples.extend(client_samples)
        failures.extend(client_failures)
    for proc in procs:
        proc.join(30)
    result = LoadResult(
        endpoint=endpoint.name,
        clients=clients,
        requests_each=requests_each,
        duration_s=max(end for _, end, _ in samples) - min(start for start, _, _ in samples),
        error_samples=failures[:5],
    )
    for start, end, status in samples:
        if status == endpoint.ok_status:
            result.latencies_s.append(end - start)
        else:
            result.errors[str(status)] = result.errors.get(str(status), 0) + 1
    return result
