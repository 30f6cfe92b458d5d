"""The network policy: every special-purpose range refused, public addresses allowed."""

from __future__ import annotations

import ipaddress

import pytest

from notify_relay.domain.network import NetworkPolicy, parse_networks, refusal_reason

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
