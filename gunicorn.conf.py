"""gunicorn settings shared by every way the project starts it (the Procfile, `manage.py chaos`,
the benchmarks): gunicorn reads `./gunicorn.conf.py` from its working directory, the repository
root. What differs between them (address, workers, threads) stays on their command lines."""

# One access log line per request with how long it took (%(M)s, milliseconds), so that a slow
# request is visible in the log without a profiler: remote address, time, request line, status,
# response bytes, duration, user agent.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
