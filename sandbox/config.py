"""What one sandbox partner runs with: its profile, where it listens and stores, its catalogue
and faults. Built by `sandbox.cli` from options, run by `sandbox.server`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sandbox.faults import FaultSettings
from sandbox.ledger import Product


@dataclass(frozen=True)
class SandboxConfig:
    profile: str
    port: int
    store: Path
    host: str = "127.0.0.1"
    api_key: str = "sandbox-key"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    timezone: str = "UTC"
    catalogue: dict[str, Product] | None = None
    faults: FaultSettings = field(default_factory=FaultSettings)
    hang_s: float = 30.0
    threads: int = 64
    lookup_by_reference: bool = True
