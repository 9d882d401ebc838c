"""`GET /metrics` (views.py) and what it reads of every app when Prometheus scrapes
(collector.py). They live above the apps they read, as the console does; the instruments the apps
record into and the multiprocess plumbing are in config.metrics, which imports none of them."""
