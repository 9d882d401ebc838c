"""Partner connectors: one adapter module per partner protocol behind `PartnerConnector`.

A new partner protocol is one module plus one entry in `CONNECTORS`.
"""

from __future__ import annotations

from collections.abc import Callable

from partners.connectors.base import PartnerConnector, PermanentPartnerError
from partners.connectors.legacy import LegacyConnector
from partners.connectors.reference import ReferenceConnector
from partners.models import Adapter, Partner

CONNECTORS: dict[str, Callable[[Partner], PartnerConnector]] = {
    Adapter.REFERENCE: ReferenceConnector,
    Adapter.LEGACY: LegacyConnector,
}


def connector_for(partner: Partner) -> PartnerConnector:
    """The connector speaking `partner`'s protocol."""
    try:
        factory = CONNECTORS[partner.adapter]
    except KeyError:
        raise PermanentPartnerError(
            f"partner {partner.code}: no connector for adapter {partner.adapter!r}"
        ) from None
    return factory(partner)
