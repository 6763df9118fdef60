"""Registration-time outbound checks: a URL whose host is a literal address the outbound policy
refuses is a 400 `outbound_address_refused`, audited as `outbound.refused`. Hostnames are
checked when fetched (`controlplane.outbound`)."""

from __future__ import annotations

from aiohttp import web

from controlplane.appkeys import CONFIG
from controlplane.http import audit_event
from controlplane.outbound import AddressRefused, literal_address

__all__ = ["refuse_private_literal"]


async def refuse_private_literal(request: web.Request, url: str, field: str) -> None:
    try:
        request.app[CONFIG].outbound.check_literal(url, field=field)
    except AddressRefused as exc:
        await audit_event(
            request,
            type="outbound.refused",
            outcome="denied",
            reason=exc.code,
            extra={"field": field, "address": str(literal_address(url)), "path": request.path},
        )
        raise
