"""The customer web client: server-rendered pages over the booking services (the API's sibling)."""
