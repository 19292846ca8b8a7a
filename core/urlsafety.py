"""Outbound URL safety (SSRF): which URLs and addresses a connector may reach.

Hostnames are resolved and every address is checked; the connection is then made to
one of the checked addresses (see ``integration_hub.core.transport``), so a DNS answer
cannot change between the check and the connect. Numeric forms such as ``2130706433``,
``0x7f.1`` or ``127.1`` are caught because the check runs on what the resolver returns.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from .exceptions import UnsafeURLError


def check_url(url, allow_http=False):
    """Validate scheme and host of ``url``; returns (scheme, host, port)."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise UnsafeURLError(f"only http and https URLs are allowed, not {scheme or 'a relative URL'!r}")
    if scheme == "http" and not allow_http:
        raise UnsafeURLError("plain http is not allowed for this connector (use https, or allow http explicitly)")
    if not parts.hostname:
        raise UnsafeURLError("the URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURLError(f"invalid port: {exc}") from None
    return scheme, parts.hostname, port


def address_problem(address):
    """Why ``address`` (an IP string) is not a public unicast address, or None if it is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.version == 6 and ip.sixtofour:
        ip = ip.sixtofour
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if ip.version == 4 and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "carrier-grade NAT"
    if ip.version == 6 and ip in ipaddress.ip_network("fc00::/7"):
        return "unique-local"
    if ip.version == 6 and ip.is_site_local:
        return "site-local"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "private"
    return None


def resolve(host, port, allow_private=False):
    """Resolve ``host`` and return its addresses as getaddrinfo tuples, all checked.

    Refuses the whole host if any address is not allowed: a name that resolves to one
    public and one private address is not trusted with either.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    if not allow_private:
        for info in infos:
            problem = address_problem(info[4][0])
            if problem:
                raise UnsafeURLError(
                    f"{host} resolves to {info[4][0]}, a {problem} address; "
                    "allow private network on the connector to reach it"
                )
    return infos
