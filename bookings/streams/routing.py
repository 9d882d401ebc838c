"""The one rule that sends a request to the events process: a proxy's, so nothing but `re` here
(config/router.py imports it without Django; the nginx rule in docs/design.md spells it out)."""

import re

# Either stream, with or without its trailing slash (bookings/streams/urls.py).
STREAM_PATH = re.compile(r"^/api/v1/bookings/(?:[^/]+/)?events/?$")
