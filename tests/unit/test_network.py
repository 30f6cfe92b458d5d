"""The network policy: every special-purpose range refused, public addresses allowed."""

from __future__ import annotations

import ipaddress

import pytest

from notify_relay.domain.network import (
    NetworkPolicy,
    embedded_ipv4,
    parse_networks,
    refusal_reason,
)
from notify_relay.domain.special_ranges import IPV4, IPV6, METADATA, Range, special_range

REFUSED = [
    "0.0.0.0", "0.1.2.3",                     # this network
    "10.0.0.1", "10.255.255.255",             # private
    "100.64.0.1", "100.127.255.254",          # shared address space (CGNAT)
    "127.0.0.1", "127.255.255.254",           # loopback
    "169.254.169.254", "169.254.0.1",         # link-local, cloud metadata
    "172.16.0.1", "172.31.255.255",           # private
    "192.0.0.1",                              # IETF protocol assignments
    "192.0.2.1",                              # TEST-NET-1
    "192.88.99.1",                            # 6to4 relay anycast (deprecated)
    "192.168.1.1",                            # private
    "198.18.0.1", "198.19.255.255",           # benchmarking
    "198.51.100.7",                           # TEST-NET-2
    "203.0.113.9",                            # TEST-NET-3
    "224.0.0.1", "239.255.255.250",           # multicast
    "240.0.0.1", "255.255.255.255",           # reserved, broadcast
    "::", "::1",                              # unspecified, loopback
    "::ffff:127.0.0.1", "::ffff:10.0.0.1",    # IPv4-mapped
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",  # NAT64 of loopback and metadata
    "2002:7f00:1::1", "2002:a00:1::",         # 6to4 of loopback, private
    "fc00::1", "fd12:3456::1",                # unique local
    "fe80::1",                                # link-local
    "ff02::1", "ff0e::1",                     # multicast
    "2001:db8::1",                            # documentation
    "100::1",                                 # discard-only
    "fec0::1",                                # site-local (deprecated)
    "::a9fe:a9fe", "::a00:1", "::8.8.8.8",    # IPv4-compatible (deprecated, ::/96)
    "::1:0:0:1", "200::1", "4000::1",         # unassigned, outside 2000::/3
]

ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
           "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", REFUSED)
def test_special_purpose_addresses_refused(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is not None
    assert NetworkPolicy().refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_allowed(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_allow_networks_opens_a_range_only() -> None:
    policy = NetworkPolicy(parse_networks(["127.0.0.0/8", "fd00::/8"]))
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("fd00::5")) is None
    assert policy.refusal(ipaddress.ip_address("10.0.0.1")) is not None
    assert policy.refusal(ipaddress.ip_address("::1")) is not None


@pytest.mark.parametrize(
    ("host", "refused"),
    [("127.0.0.1", True), ("[::1]", True), ("::ffff:7f00:1", True), ("8.8.8.8", False),
     ("localhost", False), ("partner.example", False)],
)
def test_literal_refusal_only_judges_ip_literals(host: str, refused: bool) -> None:
    assert (NetworkPolicy().literal_refusal(host) is not None) is refused


def _inside(row: Range) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Addresses of the row that no more specific row holds."""
    net = row.network
    candidates = [net.network_address, net.broadcast_address]
    if net.num_addresses > 2:
        candidates.append(net.network_address + net.num_addresses // 2 + 1)
    return [a for a in candidates if special_range(a) == row
            and not (isinstance(a, ipaddress.IPv6Address) and embedded_ipv4(a) is not None)]


@pytest.mark.parametrize("row", [*IPV4, *IPV6, *METADATA], ids=lambda r: str(r.network))
def test_each_registry_row_decides(row: Range) -> None:
    addresses = _inside(row)
    assert addresses, f"every address of {row.network} is held by a more specific row"
    for address in addresses:
        reason = refusal_reason(address)
        if row.global_:
            assert reason is None, reason
        else:
            assert reason is not None
            assert row.name in reason


@pytest.mark.parametrize("address", ["192.0.0.8", "3fff::1", "3fff:fff::1", "168.63.129.16",
                                     "5f00::1", "64:ff9b:1::1", "100:0:0:1::1"])
def test_ranges_the_interpreter_missed_are_refused(address: str) -> None:
    """Python 3.11's tables dialled these (issue 7, finding 14)."""
    assert refusal_reason(ipaddress.ip_address(address)) is not None


def test_literal_refusal_is_each_policys_own() -> None:
    """Its answers are cached by policy and host: an allowance of one policy is not another's."""
    strict, loopback = NetworkPolicy(), NetworkPolicy(parse_networks(["127.0.0.0/8"]))
    for _ in range(2):  # asked again: the cached answers, still each policy's
        assert strict.literal_refusal("127.0.0.1") is not None
        assert loopback.literal_refusal("127.0.0.1") is None
        assert loopback.literal_refusal("[::1]") is not None
        assert strict.literal_refusal("partner.example") is None  # a name: judged at connect
