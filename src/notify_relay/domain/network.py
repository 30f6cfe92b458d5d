"""Which addresses a target may reach: the guard against server-side request forgery.

Only globally routable unicast addresses are allowed, unless the operator allows a range.
IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4, Teredo) are judged by it; the
ranges themselves are the IANA registries' rows in special_ranges.py. An IPv6 address
outside 2000::/3, IPv6's only global unicast space, is refused when no row names it: the
special-purpose registry has no row for IPv4-compatible addresses (::/96, deprecated), which
Python 3.11 calls global.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from notify_relay.domain.special_ranges import special_range

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")


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
    row = special_range(address)
    if row is not None:
        return None if row.global_ else f"{address} is a {row.name} address ({row.network})"
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return f"{address} is outside IPv6's global unicast range ({_GLOBAL_UNICAST_V6})"
    if not address.is_global:  # the interpreter knows of a range the rows do not
        return f"{address} is not a globally routable address"
    return None


LITERALS_KEPT = 4096  # judged hosts a policy remembers (see literal_refusal)


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    allowed: tuple[IPNetwork, ...] = ()
    _literals: dict[str, str | None] = field(default_factory=dict, init=False, repr=False,
                                              compare=False, hash=False)

    def refusal(self, address: IPAddress) -> str | None:
        if any(address.version == net.version and address in net for net in self.allowed):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            mapped = address.ipv4_mapped
            if any(net.version == 4 and mapped in net for net in self.allowed):
                return None
        return refusal_reason(address)

    def literal_refusal(self, host: str) -> str | None:
        """Refusal for a host that is an IP literal; None for names (checked at connect).

        Asked at each submission and each attempt, mostly of a few hosts: parsing and
        judging one took ~2 % of each process's CPU (py-spy, bench/run.py), so the answers
        are kept, by host, in the policy (frozen: they cannot change)."""
        try:
            return self._literals[host]
        except KeyError:
            pass
        try:
            refusal = self.refusal(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            refusal = None
        if len(self._literals) >= LITERALS_KEPT:
            self._literals.clear()
        self._literals[host] = refusal
        return refusal
