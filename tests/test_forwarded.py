"""`--trusted-proxy`: the client's address from `X-Forwarded-For`.

The pure rules (`core.forwarded`) with examples and hypothesis; then the
server's logs over real sockets.
"""

from __future__ import annotations

import ipaddress
import logging

import pytest
import trio
from conftest import StartServer, wait_until
from hypothesis import given
from hypothesis import strategies as st
from wsclient import RawClient, Rejected

from trio_chat.core.forwarded import (
    Address,
    Network,
    forwarded_client,
    is_trusted,
    parse_address,
    parse_network,
)

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("192.0.2.7", "192.0.2.7/32"),
        ("fd00::/8", "fd00::/8"),
        ("::1", "::1/128"),
        (" 172.16.0.0/12 ", "172.16.0.0/12"),
    ],
)
def test_networks(text: str, network: str) -> None:
    assert parse_network(text) == ipaddress.ip_network(network)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10.0.0.1/8", "host bits are set (the network is 10.0.0.0/8)"),
        ("10.0.0.0/33", "not a network"),
        ("proxy.internal", "not a network"),
        ("10.0.0.0/8/8", "not a network"),
        ("", "an empty network"),
        ("*", "not a network"),
    ],
)
def test_bad_networks(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="^" + reason.replace("(", r"\(").replace(")", r"\)")):
        parse_network(text)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("192.0.2.7", "192.0.2.7"),
        (" 192.0.2.7 ", "192.0.2.7"),
        ("192.0.2.7:4711", "192.0.2.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # a dual-stack socket's IPv4 peer
        ("unknown", None),
        ("_hidden", None),
        ("192.0.2.7:", None),
        ("192.0.2.7:port", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("", None),
        ("١٩٢.0.2.7", None),  # digits of another script
    ],
)
def test_addresses_as_proxies_write_them(text: str, address: str | None) -> None:
    expected = None if address is None else ipaddress.ip_address(address)
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("10.0.0.2", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.2", "203.0.113.9, 198.51.100.7", "198.51.100.7"),  # left part: made up
        ("10.0.0.2", "203.0.113.9, 198.51.100.7, 10.0.0.3", "198.51.100.7"),  # two proxies
        ("10.0.0.2", "10.0.0.5, 10.0.0.3", "10.0.0.5"),  # all trusted: the left-most
        ("10.0.0.2", "garbage, 198.51.100.7", "198.51.100.7"),
        ("10.0.0.2", "198.51.100.7, garbage, 10.0.0.3", "10.0.0.3"),  # stops at garbage
        ("10.0.0.2", "garbage", None),
        ("10.0.0.2", "", None),
        ("10.0.0.2", None, None),
        ("198.51.100.1", "203.0.113.9", None),  # not a trusted peer: its own address
        ("fd00::2", "2001:db8::7", "2001:db8::7"),
        ("::ffff:10.0.0.2", "198.51.100.7", "198.51.100.7"),
        ("not an address", "198.51.100.7", None),
    ],
)
def test_the_right_most_untrusted_address_is_the_client(
    peer: str, header: str | None, client: str | None
) -> None:
    expected = None if client is None else ipaddress.ip_address(client)
    assert forwarded_client(peer, header, PROXIES) == expected


def test_no_trusted_proxies_means_no_header_is_read() -> None:
    assert forwarded_client("10.0.0.2", "198.51.100.7", ()) is None


# -- properties ---------------------------------------------------------------

addresses = st.one_of(
    st.ip_addresses(v=4, network="10.0.0.0/8"),  # inside PROXIES
    st.ip_addresses(v=4),
    st.ip_addresses(v=6),
)
entries = st.one_of(
    addresses.map(str),
    addresses.map(lambda a: f"[{a}]:80" if a.version == 6 else f"{a}:80"),
    st.sampled_from(["unknown", "", " ", "garbage"]),
)


def header_of(items: list[str]) -> str:
    return ", ".join(items)


@given(peer=addresses, items=st.lists(entries, max_size=6))
def test_the_answer_is_none_or_an_address_of_the_header(peer: Address, items: list[str]) -> None:
    client = forwarded_client(str(peer), header_of(items), PROXIES)
    hop = parse_address(str(peer))  # an IPv4-mapped peer counts as its IPv4 address
    assert hop is not None
    if not is_trusted(hop, PROXIES):
        assert client is None
    if client is not None:
        assert client in {parse_address(item) for item in items}


@given(
    peer=st.ip_addresses(v=4, network="10.0.0.0/8"),
    forged=st.lists(entries, max_size=4),
    appended=st.lists(addresses, min_size=1, max_size=4),
)
def test_nothing_prepended_changes_the_answer_once_an_untrusted_address_was_appended(
    peer: Address, forged: list[str], appended: list[Address]
) -> None:
    if all(is_trusted(address, PROXIES) for address in appended):
        return  # no untrusted address: the walk goes on into the forged part
    honest = [str(address) for address in appended]
    expected = forwarded_client(str(peer), header_of(honest), PROXIES)
    assert expected is not None
    assert not is_trusted(expected, PROXIES)
    assert forwarded_client(str(peer), header_of([*forged, *honest]), PROXIES) == expected


@given(peer=st.text(max_size=40), header=st.text(max_size=200))
def test_no_input_raises(peer: str, header: str) -> None:
    forwarded_client(peer, header, PROXIES)
    parse_address(header)


@given(network=st.text(max_size=40))
def test_a_network_parses_or_says_why(network: str) -> None:
    try:
        parsed: Network = parse_network(network)
    except ValueError as error:
        reason = str(error)
    else:
        assert parse_network(str(parsed)) == parsed
        return
    assert reason


# -- the server's logs -----------------------------------------------------------


async def refused_origin(port: int, forwarded_for: str) -> None:
    """An upgrade with a foreign origin, which the server logs with the
    client's address, claiming to come from `forwarded_for`."""
    headers = [(b"Origin", b"https://evil.example"), (b"X-Forwarded-For", forwarded_for.encode())]
    with trio.fail_after(10), pytest.raises(Rejected) as refused:
        await RawClient.connect(port, headers=headers)
    assert refused.value.status == 403


async def test_a_trusted_proxy_names_the_client_in_the_logs(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    server = await start_server(trusted_proxies=LOOPBACK)
    await refused_origin(server.port, "203.0.113.9, 198.51.100.7")
    assert "198.51.100.7: origin 'https://evil.example' not allowed" in caplog.text
    assert "203.0.113.9" not in caplog.text


async def test_an_untrusted_peer_is_named_by_its_own_address(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    server = await start_server(trusted_proxies=PROXIES)
    await refused_origin(server.port, "198.51.100.7")
    assert "198.51.100.7" not in caplog.text
    assert "127.0.0.1:" in caplog.text
    assert "origin 'https://evil.example' not allowed" in caplog.text


async def test_a_joined_client_is_logged_by_its_forwarded_address(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_chat")
    server = await start_server(trusted_proxies=LOOPBACK)
    alice = await server.client(headers=[(b"X-Forwarded-For", b"198.51.100.7")])
    await alice.hello("alice")
    # The session logs the join just after the welcome has gone out.
    with trio.fail_after(10):
        await wait_until(lambda: "198.51.100.7 'alice'@lobby joined" in caplog.text)
