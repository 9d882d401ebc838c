"""Live status: Server-Sent Events of what a customer is shown, served by the events process.

The core publishes each change after commit (`bookings.live`); this package follows: the hub
(`hub.py`, one per process) holds the process's one Redis subscription and its database threads
and re-reads every open stream's booking on each heartbeat; the views (`views.py`) authenticate
a stream and turn what the hub hands its follower into the event stream. docs/design.md, "Live
status", says why it is built this way and how the stream is routed.
"""
