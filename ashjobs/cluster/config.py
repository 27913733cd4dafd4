"""The [cluster] config section. Light to import: no sockets, no zeroconf, no msgpack."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ashjobs.config import Duration

DEFAULT_PORT = 7420


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """'10.0.0.1:7420' / 'host:7420' / '[::1]:7420' → (host, port). ValueError with the accepted forms."""
    s = text.strip()
    host, port_s = s, ""
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ValueError(f"bad address {text!r}: missing ']'")
        host, rest = s[1:end], s[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad address {text!r} (use host:port)")
            port_s = rest[1:]
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    elif s.count(":") > 1:
        raise ValueError(f"bad address {text!r}: write IPv6 addresses as [addr]:port")
    if not port_s:
        if default_port is None:
            raise ValueError(f"bad address {text!r}: missing port (use host:port)")
        port = default_port
    else:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"bad address {text!r}: port must be 1-65535")
        port = int(port_s)
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"bad address {text!r}: missing host (use host:port)")
    if ":" in host:
        ipaddress.IPv6Address(host)  # raises ValueError for junk
    return host, port


@dataclass
class TlsConfig:
    """Mutual TLS for links over untrusted networks: all three files, or none."""

    cert: str = ""
    key: str = ""
    ca: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.key or self.ca)

    def validate(self) -> str | None:
        if self.enabled and not (self.cert and self.key and self.ca):
            return "cert, key and ca: set all three for mutual TLS, or none"
        return None


@dataclass
class ClusterConfig:
    listen: str = f"0.0.0.0:{DEFAULT_PORT}"
    advertise_address: str | None = None
    discovery: list[Literal["mdns", "static"]] = field(default_factory=lambda: ["mdns", "static"])
    peers: list[str] = field(default_factory=list)
    scheduler: str | None = None
    interfaces: list[str] = field(default_factory=list)
    secret_file: str = ""  # "" → <data_dir>/cluster.secret, resolved by secret_path()
    lease_ttl: Duration = Duration(10.0)  # noqa: RUF009 (NewType: an identity call)
    heartbeat: Duration | None = None  # None → lease_ttl / 3
    max_frame: int = 1 << 20
    tls: TlsConfig = field(default_factory=TlsConfig)

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.lease_ttl / 3

    @property
    def listen_addr(self) -> tuple[str, int]:
        return parse_hostport(self.listen, DEFAULT_PORT)

    @property
    def advertise_addr(self) -> tuple[str, int] | None:
        """What others should dial: advertise_address ('host' or 'host:port'; port defaults to listen's)."""
        if not self.advertise_address:
            return None
        return parse_hostport(self.advertise_address, self.listen_addr[1])

    @property
    def peer_addrs(self) -> list[tuple[str, int]]:
        return [parse_hostport(p, DEFAULT_PORT) for p in self.peers]

    @property
    def scheduler_addr(self) -> tuple[str, int] | None:
        return parse_hostport(self.scheduler, DEFAULT_PORT) if self.scheduler else None

    def secret_path(self, data_dir: str | Path) -> Path:
        return Path(self.secret_file).expanduser() if self.secret_file else Path(data_dir) / "cluster.secret"

    def validate(self) -> str | None:
        checks = [("listen", self.listen), ("advertise_address", self.advertise_address),
                  ("scheduler", self.scheduler)]
        for key, value in checks:
            if value is not None:
                try:
                    parse_hostport(value, DEFAULT_PORT)
                except ValueError as e:
                    return f"{key}: {e}"
        for i, peer in enumerate(self.peers):
            try:
                parse_hostport(peer, DEFAULT_PORT)
            except ValueError as e:
                return f"peers[{i}]: {e}"
        if len(set(self.discovery)) != len(self.discovery):
            return "discovery: listed twice"
        if self.lease_ttl < 1.0:
            return f"lease_ttl: must be at least 1s, got {self.lease_ttl:g}s"
        if self.heartbeat is not None and not 0 < self.heartbeat < self.lease_ttl:
            return f"heartbeat: must be > 0 and shorter than lease_ttl ({self.lease_ttl:g}s), got {self.heartbeat:g}s"
        if not 1024 <= self.max_frame <= 64 << 20:
            return f"max_frame: must be between 1024 and 67108864 bytes, got {self.max_frame}"
        return None
