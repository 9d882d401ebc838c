"""Metrics for Prometheus: `GET /metrics` (reconciliation.metrics.views), open in development and
behind a bearer token (METRICS_TOKEN) in production. This package holds what every app records
into and the multiprocess plumbing; it imports no app (the scrape-time reads live above them).

Two kinds of figure, made in two ways:

- what the database and Redis hold (bookings by state, needs_attention by reason, each queue's
  depth, each partner's circuit breaker) is read when Prometheus scrapes, by a collector
  (reconciliation.metrics.collector): a handful of aggregate queries and one Redis round trip,
  the same answer from whichever web process is asked;
- what happens in a process (a worker's partner call, a webhook received, a partner's change
  applied, a sweep, Dramatiq's messages) is counted where it happens (config.metrics.events,
  config.metrics.worker). Web servers and workers run several processes, so these are kept in
  prometheus_client's multiprocess mode: every process of a machine writes its own files into
  one directory, PROMETHEUS_MULTIPROC_DIR, and a scrape sums them. Any `/metrics` of that
  machine shows them all; a machine that runs workers without a web server shows them on the
  workers' own exposition port (WORKER_METRICS_PORT, config.metrics.exposition).

Recording a figure never fails the work it measures: an error is logged once and dropped.
docs/design.md, "Metrics", says why it is built this way.
"""
