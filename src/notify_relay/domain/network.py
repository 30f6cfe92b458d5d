"""Which addresses a target may reach: the guard against server-side request forgery.

Only globally routable unicast addresses are allowed, unless the operator allows a range.
IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4, Teredo) are judged by it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Special-purpose ranges that Python's ipaddress still counts as global.
_ALSO_REFUSED = (
    ipaddress.IPv4Network("192.88.99.0/24"),  # 6to4 relay anycast, deprecated (RFC 7526)
    ipaddress.IPv6Network("fec0::/10"),  # site-local, deprecated (RFC 3879)
)


def parse_networks(spec: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in spec if item.strip())


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            reason = refusal_reason(inner)
            return f"{reason} (embedded in {address})" if reason else None
    checks = (
        (address.is_loopback, "loopback"),
        (address.is_unspecified, "unspecified"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not globally routable"),
        (any(address in net for net in _ALSO_REFUSED if net.version == address.version),
         "special-purpose"),
    )
    for hit, name in checks:
        if hit:
            return f"{address} is a {name} address"
    return None


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        if any(address.version == net.version and address in net for net in self.allowed):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            mapped = address.ipv4_mapped
            if any(net.version == 4 and mapped in net for net in self.allowed):
                return None
        return refusal_reason(address)

    def literal_refusal(self, host: str) -> str | None:
        """Refusal for a host that is an IP literal; None for names (checked at connect)."""
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None
        return self.refusal(address)
