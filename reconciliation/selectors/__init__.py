"""Reads of reconciliation: the booking's one timeline, the needs-attention queue and partner
health. Each selector runs a fixed number of queries whatever the row count."""
