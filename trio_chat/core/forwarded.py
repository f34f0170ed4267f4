"""Who the client is behind a reverse proxy: `--trusted-proxy` and `X-Forwarded-For`.

Theory of operation: each proxy in a chain appends the address it was
connected from to `X-Forwarded-For`, so the header reads left to right from
the (claimed) client to the last proxy before us, whose own address is the
TCP peer. Only the entries written by proxies we trust can be believed;
everything to the left of the first untrusted address may be made up by
whoever sent the request. So, starting from the peer and walking right to
left, the client is the first address that is not itself a trusted proxy
(the right-most untrusted one). If every address is trusted, it is the
left-most one; an entry that is not an address ends the walk at the last
good one. A peer outside the trusted networks is the client, whatever the
header says.

Invariants (checked by hypothesis in the tests): the answer is the peer or
an address that appears in the header; nothing a client prepends can change
it once a trusted proxy has appended an untrusted address; no input raises.
Pure Python: no Trio, no sockets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def parse_network(text: str) -> Network:
    """One `--trusted-proxy` value: a network in CIDR form, or one address.

    `10.0.0.0/8`, `fd00::/8`, `192.0.2.7` (that address alone, as `/32`).
    A network with host bits set (`10.0.0.1/8`) is refused rather than
    silently widened or narrowed: it is likelier a typo than a plan.

    Raises:
        ValueError: with a short reason, if `text` is not such a network.
    """
    text = text.strip()
    if not text:
        raise ValueError("an empty network")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            "not a network (use CIDR such as 10.0.0.0/8 or fd00::/8, or one address)"
        ) from None
    raise ValueError(f"host bits are set (the network is {loose})")


def parse_address(text: str) -> Address | None:
    """An address as proxies write it in `X-Forwarded-For`, or None.

    Plain IPv4 or IPv6, `IPv4:port`, `[IPv6]` or `[IPv6]:port` (some proxies
    add the port); an IPv4-mapped IPv6 address (`::ffff:192.0.2.7`, as a
    dual-stack socket reports an IPv4 peer) is taken as its IPv4 address.
    Anything else (`unknown`, a name, garbage) is None.
    """
    text = text.strip()
    if text.startswith("["):
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not _is_port(rest)):
            return None
        text = inside
    elif text.count(":") == 1:  # IPv4:port (an IPv6 address has at least two colons)
        host, _, port = text.partition(":")
        if not _is_port(":" + port):
            return None
        text = host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isascii() and text[1:].isdecimal() and len(text) <= 6


def is_trusted(address: Address, trusted: Sequence[Network]) -> bool:
    """Whether `address` lies in one of the `trusted` networks."""
    return any(address in network for network in trusted if network.version == address.version)


def forwarded_client(
    peer: str, forwarded_for: str | None, trusted: Sequence[Network]
) -> Address | None:
    """The client's address from `X-Forwarded-For`, when the peer may tell it.

    Args:
        peer: the TCP peer's address (as `getpeername` gives it).
        forwarded_for: the request's `X-Forwarded-For` (several headers
            joined with commas), or None.
        trusted: the `--trusted-proxy` networks.

    Returns:
        None when the peer's own address stands (it is not a trusted proxy,
        or it sent no usable header); else the right-most address of the
        header that is not a trusted proxy (see the module docstring).
        The caller logs (and limits) by the answer.
    """
    if not trusted or not forwarded_for:
        return None
    hop = parse_address(peer)
    if hop is None or not is_trusted(hop, trusted):
        return None
    client: Address | None = None
    for entry in reversed(forwarded_for.split(",")):
        address = parse_address(entry)
        if address is None:
            break
        client = address
        if not is_trusted(address, trusted):
            break
    return client
