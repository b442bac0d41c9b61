"""The seam through which weight servers advertise themselves and pullers find them.

``rdma_loader`` stays a leaf: it only defines the ``Registry`` protocol and the frozen
``Advertisement``. The Redis-backed registry lives with the workers (``workers.peers``); a
``StaticRegistry`` of configured peers is here for tools and tests. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

TRANSPORT_NAMES = ("tcp", "rdma")


@dataclass(frozen=True)
class Advertisement:
    """One peer that serves one model: where it listens and how fast it says it is."""

    fingerprint: str
    host: str
    port: int
    transports: tuple[str, ...] = ("tcp",)
    bandwidth_bytes_s: float | None = None  # measured or configured link speed, None: unknown
    model: str = ""  # the alias or source it serves, for people reading the registry

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port: 1..65535 required, got {self.port}")
        unknown = [t for t in self.transports if t not in TRANSPORT_NAMES]
        if unknown:
            raise ValueError(f"transports: unknown {unknown}; allowed: {', '.join(TRANSPORT_NAMES)}")

    @property
    def key(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "transports": list(self.transports)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Advertisement:
        try:
            return cls(fingerprint=str(data["fingerprint"]), host=str(data["host"]),
                       port=int(data["port"]), transports=tuple(data.get("transports") or ("tcp",)),
                       bandwidth_bytes_s=data.get("bandwidth_bytes_s"), model=str(data.get("model", "")))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"advertisement: {exc!r} in {data!r}") from exc


@runtime_checkable
class Registry(Protocol):
    def advertise(self, ad: Advertisement, ttl_s: float) -> None:
        """Publish (or refresh) ``ad``; it disappears ``ttl_s`` after the last refresh."""

    def withdraw(self, ad: Advertisement) -> None: ...

    def lookup(self, fingerprint: str) -> tuple[Advertisement, ...]:
        """Every live peer serving ``fingerprint``, fastest advertised first."""

    def lookup_model(self, model: str) -> tuple[Advertisement, ...]:
        """Every live peer serving a model advertised under this alias or source."""


class StaticRegistry:
    """A fixed list of peers (configuration, tests); ``advertise`` adds to it, TTLs are ignored."""

    def __init__(self, ads: Iterable[Advertisement] = ()) -> None:
        self._ads: dict[str, Advertisement] = {ad.key: ad for ad in ads}

    def advertise(self, ad: Advertisement, ttl_s: float) -> None:
        self._ads[ad.key] = ad

    def withdraw(self, ad: Advertisement) -> None:
        self._ads.pop(ad.key, None)

    def lookup(self, fingerprint: str) -> tuple[Advertisement, ...]:
        return _fastest_first(ad for ad in self._ads.values() if ad.fingerprint == fingerprint)

    def lookup_model(self, model: str) -> tuple[Advertisement, ...]:
        return _fastest_first(ad for ad in self._ads.values() if ad.model == model)


def _fastest_first(ads: Iterable[Advertisement]) -> tuple[Advertisement, ...]:
    return tuple(sorted(ads, key=lambda ad: -(ad.bandwidth_bytes_s or 0.0)))
