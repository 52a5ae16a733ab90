"""Outbound HTTP to addresses users choose (webhook endpoints), kept off internal networks
(SSRF): the URL rules, and the address check run when a URL is registered and again before every
request. The host is resolved and every address it resolves to must be public; the request then
goes to one of the checked addresses (pinned, `pinned_request_url`), so a DNS answer that changes
between the check and the connect (rebinding) cannot send it elsewhere.

`allow_private` (ZENTHOR_WEBHOOKS_ALLOW_PRIVATE, development only) lifts the address rules and
admits http://, so a receiver on the developer's own machine can be used."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from zenthor.errors import InvalidArgument, Unavailable

MAX_URL_CHARS = 2048
RESOLVE_TIMEOUT_S = 5.0
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Names that are loopback by definition (RFC 6761), whatever a resolver answers for them.
_LOOPBACK_NAMES = ("localhost", "localhost.")
# getaddrinfo's answers for a name that does not exist (as opposed to a resolver in trouble).
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


@dataclass(frozen=True)
class TargetUrl:
    """A URL that passed the syntax rules: its scheme, host (lower-case, no brackets) and port."""

    url: str
    scheme: str
    host: str
    port: int


def forbidden_address_reason(address: IpAddress) -> str | None:
    """Why a request may not go to `address`, or None for a public unicast address. An IPv4
    address mapped into IPv6 (::ffff:10.0.0.1) is judged as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_private or address.is_reserved or not address.is_global:
        return "a private or reserved address"
    return None


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_target_url(url: str, *, allow_private: bool, field: str = "url") -> TargetUrl:
    """The URL's parts, or INVALID_ARGUMENT naming `field`: https only (http too with
    `allow_private`), a host, no credentials, and an IP literal or `localhost` only when public
    (or allowed)."""
    if not url:
        raise InvalidArgument(field, "is required")
    if len(url) > MAX_URL_CHARS:
        raise InvalidArgument(field, f"must be at most {MAX_URL_CHARS} characters")
    if url != url.strip() or any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise InvalidArgument(field, "must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidArgument(field, f"is not a valid URL ({e})") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise InvalidArgument(field, "must be an https:// URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidArgument(field, "must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(field, "must not carry credentials")
    if not allow_private:
        literal = _literal(host)
        reason = forbidden_address_reason(literal) if literal is not None else None
        if reason is None and (host in _LOOPBACK_NAMES or host.endswith(".localhost")):
            reason = "a loopback address"
        if reason is not None:
            raise InvalidArgument(field, f"must not point to {reason}")
    return TargetUrl(url=url, scheme=parts.scheme, host=host, port=port or (443 if parts.scheme == "https" else 80))


async def resolve_target(target: TargetUrl, *, allow_private: bool, field: str = "url") -> list[IpAddress]:
    """Every address the host resolves to, each checked (unless `allow_private`): one
    non-public address refuses the URL, INVALID_ARGUMENT naming `field`. A name that does not
    exist is INVALID_ARGUMENT too; a resolver that does not answer in time is UNAVAILABLE."""
    literal = _literal(target.host)
    if literal is not None:
        addresses: list[IpAddress] = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise Unavailable(f"Resolving {target.host} timed out") from None
        except (socket.gaierror, UnicodeError) as e:
            if isinstance(e, UnicodeError) or e.errno in _NO_SUCH_NAME:
                raise InvalidArgument(field, f"host {target.host} does not resolve") from None
            raise Unavailable(f"Resolving {target.host} failed: {e}") from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # drop an IPv6 zone
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise InvalidArgument(field, f"host {target.host} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = forbidden_address_reason(address)
            if reason is not None:
                raise InvalidArgument(field, f"must not point to {reason} ({target.host} resolves to {address})")
    return addresses


def pinned_request_url(target: TargetUrl, address: IpAddress) -> str:
    """`target.url` with its host replaced by `address`: the request connects there, while the
    Host header and TLS server name (SNI and certificate check) stay the original host."""
    parts = urlsplit(target.url)
    host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    netloc = f"{host}:{target.port}"
    return parts._replace(netloc=netloc).geturl()


def host_header(target: TargetUrl) -> str:
    default = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == default else f"{host}:{target.port}"
