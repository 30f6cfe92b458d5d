"""The special-purpose address ranges, as data: the IANA IPv4 and IPv6 Special-Purpose
Address Registries (their "Globally Reachable" column), multicast, and the cloud metadata
endpoints that sit in public space.

Kept here rather than taken from the interpreter's `ipaddress` flags alone: those follow
the Python release, and 3.11 dialled 192.0.0.8 and 3fff::/20. Rows are matched by the
longest prefix, so a globally reachable exception inside a refused block (192.0.0.9/32
inside 192.0.0.0/24) is allowed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Range:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    name: str
    global_: bool  # the registry's "Globally Reachable"; False for N/A


def _rows(*rows: tuple[str, str, bool]) -> tuple[Range, ...]:
    return tuple(Range(ipaddress.ip_network(net), name, reachable) for net, name, reachable in rows)


# IANA IPv4 Special-Purpose Address Registry (RFC 6890 and updates), then multicast
IPV4: tuple[Range, ...] = _rows(
    ("0.0.0.0/8", '"this network"', False),
    ("0.0.0.0/32", '"this host on this network"', False),
    ("10.0.0.0/8", "private-use", False),
    ("100.64.0.0/10", "shared address space", False),
    ("127.0.0.0/8", "loopback", False),
    ("169.254.0.0/16", "link-local", False),
    ("172.16.0.0/12", "private-use", False),
    ("192.0.0.0/24", "IETF protocol assignments", False),
    ("192.0.0.0/29", "IPv4 service continuity prefix", False),
    ("192.0.0.8/32", "IPv4 dummy address", False),
    ("192.0.0.9/32", "port control protocol anycast", True),
    ("192.0.0.10/32", "traversal using relays around NAT anycast", True),
    ("192.0.0.170/32", "NAT64/DNS64 discovery", False),
    ("192.0.0.171/32", "NAT64/DNS64 discovery", False),
    ("192.0.2.0/24", "documentation (TEST-NET-1)", False),
    ("192.31.196.0/24", "AS112-v4", True),
    ("192.52.193.0/24", "automatic multicast tunneling", True),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast", False),
    ("192.168.0.0/16", "private-use", False),
    ("192.175.48.0/24", "direct delegation AS112 service", True),
    ("198.18.0.0/15", "benchmarking", False),
    ("198.51.100.0/24", "documentation (TEST-NET-2)", False),
    ("203.0.113.0/24", "documentation (TEST-NET-3)", False),
    ("240.0.0.0/4", "reserved", False),
    ("255.255.255.255/32", "limited broadcast", False),
    ("224.0.0.0/4", "multicast", False),
)

# IANA IPv6 Special-Purpose Address Registry, then multicast and deprecated site-local.
# ::ffff:0:0/96, 64:ff9b::/96, 2001::/32 (Teredo) and 2002::/16 (6to4) carry an IPv4
# address and are judged by it before these rows are read.
IPV6: tuple[Range, ...] = _rows(
    ("::1/128", "loopback", False),
    ("::/128", "unspecified", False),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation", False),
    ("100::/64", "discard-only", False),
    ("100:0:0:1::/64", "dummy IPv6 prefix", False),
    ("2001::/23", "IETF protocol assignments", False),
    ("2001:1::1/128", "port control protocol anycast", True),
    ("2001:1::2/128", "traversal using relays around NAT anycast", True),
    ("2001:1::3/128", "DNS-SD service registration protocol anycast", True),
    ("2001:2::/48", "benchmarking", False),
    ("2001:3::/32", "automatic multicast tunneling", True),
    ("2001:4:112::/48", "AS112-v6", True),
    ("2001:10::/28", "deprecated ORCHID", False),
    ("2001:20::/28", "ORCHIDv2", True),
    ("2001:30::/28", "drone remote ID protocol entity tags", True),
    ("2001:db8::/32", "documentation", False),
    ("2620:4f:8000::/48", "direct delegation AS112 service", True),
    ("3fff::/20", "documentation", False),
    ("5f00::/16", "segment routing SIDs", False),
    ("fc00::/7", "unique-local", False),
    ("fe80::/10", "link-local unicast", False),
    ("fec0::/10", "deprecated site-local", False),
    ("ff00::/8", "multicast", False),
)

# cloud metadata and platform endpoints in otherwise public space
METADATA: tuple[Range, ...] = _rows(
    ("168.63.129.16/32", "Azure platform (wireserver) endpoint", False),
)


def special_range(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Range | None:
    """The most specific row that holds `address`, if any."""
    rows = (IPV4 if address.version == 4 else IPV6) + METADATA
    matches = [r for r in rows if r.network.version == address.version and address in r.network]
    return max(matches, key=lambda r: r.network.prefixlen, default=None)
