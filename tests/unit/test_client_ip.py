"""The client address behind (or without) trusted proxies, IPv6 /64 buckets, and the
validation of http.trusted_proxies."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings
from gateway.client_ip import MAX_HOPS, bucket, parse_address, parse_networks, resolve

PROXIES = parse_networks(["10.0.0.0/8", "192.0.2.7", "fd00::/8"])


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header() -> None:
    assert resolve("10.0.0.2", ["198.51.100.9"], ()) == "10.0.0.2"


def test_an_untrusted_peer_is_the_client_whatever_the_header() -> None:
    assert resolve("203.0.113.5", ["198.51.100.9"], PROXIES) == "203.0.113.5"


def test_a_trusted_proxy_names_the_client_in_x_forwarded_for() -> None:
    assert resolve("10.0.0.2", ["198.51.100.9"], PROXIES) == "198.51.100.9"


def test_entries_left_of_the_first_untrusted_hop_are_ignored() -> None:
    # The client wrote "1.1.1.1, 10.0.0.9" itself; the proxy appended its real address.
    header = ["1.1.1.1, 10.0.0.9, 198.51.100.9"]
    assert resolve("10.0.0.2", header, PROXIES) == "198.51.100.9"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    header = ["198.51.100.9, 192.0.2.7, 10.1.2.3"]
    assert resolve("10.0.0.2", header, PROXIES) == "198.51.100.9"


def test_several_headers_read_as_one_list_in_order() -> None:
    headers = ["6.6.6.6, 198.51.100.9", "10.1.2.3"]
    assert resolve("10.0.0.2", headers, PROXIES) == "198.51.100.9"


def test_only_trusted_hops_leave_the_left_most_trusted_one() -> None:
    assert resolve("10.0.0.2", ["192.0.2.7, 10.1.2.3"], PROXIES) == "192.0.2.7"


def test_a_trusted_proxy_without_the_header_is_the_client() -> None:
    assert resolve("10.0.0.2", [], PROXIES) == "10.0.0.2"


@pytest.mark.parametrize(
    "header",
    ["not-an-ip", "", " , ", "999.1.1.1", "1.2.3.4:http", "[2001:db8::1", "1.2.3.4/24"],
)
def test_a_malformed_hop_falls_back_to_the_last_trusted_one(header: str) -> None:
    assert resolve("10.0.0.2", [header], PROXIES) == "10.0.0.2"


def test_a_malformed_hop_behind_trusted_ones_gives_the_nearest_trusted_hop() -> None:
    assert resolve("10.0.0.2", ["198.51.100.9, junk, 10.1.2.3"], PROXIES) == "10.1.2.3"


def test_ports_and_brackets_written_by_proxies_are_understood() -> None:
    assert resolve("10.0.0.2", ["198.51.100.9:5123"], PROXIES) == "198.51.100.9"
    assert resolve("10.0.0.2", ["[2001:db8::7]:443"], PROXIES) == "2001:db8::7"


def test_an_ipv4_mapped_peer_is_its_ipv4_address() -> None:
    assert resolve("::ffff:10.0.0.2", ["198.51.100.9"], PROXIES) == "198.51.100.9"
    assert parse_address("::ffff:203.0.113.5") == parse_address("203.0.113.5")


def test_a_missing_or_odd_peer_is_returned_as_given() -> None:
    assert resolve(None, ["198.51.100.9"], PROXIES) == "unknown"
    assert resolve("unix-socket", ["198.51.100.9"], PROXIES) == "unix-socket"


def test_a_huge_header_is_read_only_to_its_last_hops() -> None:
    trusted_hops = ", ".join(["10.9.9.9"] * (MAX_HOPS + 5))
    assert resolve("10.0.0.2", [f"198.51.100.9, {trusted_hops}"], PROXIES) == "10.9.9.9"


def test_ipv6_addresses_are_bucketed_by_their_64() -> None:
    assert bucket("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert bucket("2001:db8:1:2:ffff:ffff:ffff:ffff") == bucket("2001:db8:1:2::5")
    assert bucket("2001:db8:1:3::5") != bucket("2001:db8:1:2::5")


def test_ipv4_addresses_and_unreadable_values_are_their_own_bucket() -> None:
    assert bucket("203.0.113.5") == "203.0.113.5"
    assert bucket("::ffff:203.0.113.5") == "203.0.113.5"
    assert bucket("unknown") == "unknown"


def _proxies_config(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "optmsg.toml"
    path.write_text(
        f"[http]\ntrusted_proxies = {value}\n[bridges.twilio]\nenabled = false\n", encoding="utf-8"
    )
    return path


def test_trusted_proxies_default_to_none(tmp_path: Path) -> None:
    path = tmp_path / "optmsg.toml"
    path.write_text("[bridges.twilio]\nenabled = false\n", encoding="utf-8")
    assert load_settings(path).http.trusted_proxies == []


def test_trusted_proxies_are_normalised(tmp_path: Path) -> None:
    path = _proxies_config(tmp_path, '["10.0.0.5", " 172.16.0.0/12 ", "FD00::/8"]')
    assert load_settings(path).http.trusted_proxies == ["10.0.0.5/32", "172.16.0.0/12", "fd00::/8"]


@pytest.mark.parametrize(
    "value", ['["proxy.internal"]', '["10.0.0.1/8"]', '["10.0.0.0/33"]', '[""]', '"10.0.0.1"']
)
def test_bad_trusted_proxies_are_refused_by_name(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_proxies_config(tmp_path, value))
    assert info.value.key == "http.trusted_proxies"
