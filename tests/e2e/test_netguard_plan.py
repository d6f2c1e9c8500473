"""The real node's addresses: stable per cluster name, apart per name, never on a cluster range.

Pure planning (no root needed): what the guard will match is decided here, so these run everywhere.
"""

from __future__ import annotations

import ipaddress

import pytest
from edgespec_dev import netguard


def test_a_cluster_name_always_gets_the_same_bridge_and_subnet_and_two_names_differ() -> None:
    first, again, other = netguard.plan("edgespec"), netguard.plan("edgespec"), netguard.plan("edgespec-e2e")
    assert first == again
    assert (first.bridge, first.subnet) != (other.bridge, other.subnet)
    for network in (first, other):
        assert network.subnet.subnet_of(netguard.NODE_SUBNETS) and network.subnet.prefixlen == 24
        assert len(network.bridge) <= 15  # Linux interface names
        assert network.node_ip == str(network.subnet.network_address + 1)
        assert all(
            len(chain) <= 28 for chain in (network.pods_chain, network.host_chain, network.pods6_chain)
        )


@pytest.mark.parametrize("subnet", ["10.96.5.0/24", "198.18.3.0/24", "198.19.0.0/20"])
def test_a_subnet_on_a_cluster_range_is_refused_naming_it(subnet: str) -> None:
    with pytest.raises(netguard.NetworkError, match=f"--subnet {subnet} overlaps the cluster range"):
        netguard.plan("x", subnet)


@pytest.mark.parametrize("subnet", ["100.64.1.0/24", "10.1.2.0/30", "not-a-net"])
def test_a_non_private_tiny_or_malformed_subnet_is_refused(subnet: str) -> None:
    with pytest.raises(netguard.NetworkError, match="--subnet"):
        netguard.plan("x", subnet)


def test_every_guard_rule_names_only_cluster_ranges_or_the_bridge() -> None:
    network = netguard.plan("edgespec", "10.207.9.0/24")
    allowed = [ipaddress.ip_network(r) for r in (*netguard.FAKE_RANGES, netguard.SERVICE_CIDR)] + [
        network.subnet
    ]
    for chain, rules in netguard.guard_rules(network).items():
        for rule in rules:
            if "-d" in rule:
                assert any(ipaddress.ip_network(rule[rule.index("-d") + 1]).subnet_of(a) for a in allowed), (
                    rule
                )
            elif chain.endswith("-HOST"):
                pytest.fail(f"a host rule without a destination would match all host traffic: {rule}")
    for _family, builtin, jump in netguard.guard_jumps(network):
        assert builtin == "OUTPUT" or jump[:2] == ["-i", network.bridge]
