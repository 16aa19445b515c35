"""The enclave-memory resource as the kubelet sees it: a pool of equal devices, pure logic.

The kubelet counts devices, not bytes, so the plugin advertises the EPC as devices of
`unit_mib` MiB each (1 by default): a container that asks for `inclavare.io/epc: 64` gets 64
devices, and the plugin turns their ids back into a budget of 64 MiB. Device ids are
`epc-0` .. `epc-<N-1>`; which ones a container gets does not matter (EPC is one pool), so the
preferred allocation is simply the lowest free ids. The number of devices is capped: the
kubelet receives the whole list in one gRPC message, and a host with hundreds of GiB of EPC
must advertise it in larger units (`--unit-mib`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from inclavare.errors import InclavareError

RESOURCE_NAME = "inclavare.io/epc"
COMPATIBLE_RESOURCE_NAME = "sgx.intel.com/epc"
DEVICE_PREFIX = "epc-"
MAX_DEVICES = 65536
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"

# What Allocate gives a container: rune's setting (environment, or the annotation through a
# runtime that forwards annotations), in MiB.
LIMIT_ENV = "ENCLAVE_EPC_LIMIT_MIB"
LIMIT_ANNOTATION = "enclave.epc.limit.mib"


class AllocationError(InclavareError):
    """A request names devices the pool does not have, or names one twice."""


class PoolError(InclavareError):
    """The pool cannot be made with the given size and unit."""


def check_resource_name(name: str) -> str:
    """An extended resource name as the kubelet accepts it: `domain/name`, outside the
    kubernetes.io domains."""
    domain, slash, short = name.partition("/")
    if (
        not slash
        or not domain
        or not short
        or "/" in short
        or "." not in domain
        or domain == "kubernetes.io"
        or domain.endswith(".kubernetes.io")
        or len(short) > 63
        or not all(c.isalnum() or c in "-_." for c in short)
        or not all(c.isalnum() or c in "-." for c in domain)
    ):
        raise PoolError(
            f"invalid resource name {name!r}: an extended resource name is DOMAIN/NAME, "
            "e.g. inclavare.io/epc, outside kubernetes.io"
        )
    return name


class EpcPool:
    """`total_mib` of enclave memory advertised as devices of `unit_mib` MiB."""

    def __init__(self, total_mib: int, unit_mib: int = 1) -> None:
        if unit_mib < 1:
            raise PoolError(f"the device unit must be at least 1 MiB, not {unit_mib}")
        if total_mib < unit_mib:
            raise PoolError(
                f"{total_mib} MiB of enclave memory is less than one device of {unit_mib} MiB"
            )
        count = total_mib // unit_mib
        if count > MAX_DEVICES:
            smallest = -(-total_mib // MAX_DEVICES)
            raise PoolError(
                f"{total_mib} MiB in units of {unit_mib} MiB is {count} devices, more than "
                f"the {MAX_DEVICES} the plugin advertises: use --unit-mib {smallest} or more"
            )
        self.total_mib = total_mib
        self.unit_mib = unit_mib
        self.count = count
        self.ids = [f"{DEVICE_PREFIX}{index}" for index in range(count)]

    def index(self, device_id: str) -> int | None:
        """The position of a device id of this pool; None for an id it does not have."""
        digits = device_id.removeprefix(DEVICE_PREFIX)
        if digits == device_id or not digits.isdigit() or digits != str(int(digits)):
            return None
        position = int(digits)
        return position if position < self.count else None

    def budget_mib(self, device_ids: Sequence[str]) -> int:
        """The enclave memory the devices of one container stand for, in MiB."""
        if not device_ids:
            raise AllocationError("allocate request for a container names no devices")
        seen: set[str] = set()
        for device_id in device_ids:
            if self.index(device_id) is None:
                raise AllocationError(
                    f"unknown device id {device_id[:80]!r}: this plugin has "
                    f"{DEVICE_PREFIX}0..{DEVICE_PREFIX}{self.count - 1}"
                )
            if device_id in seen:
                raise AllocationError(f"device id {device_id} is requested twice")
            seen.add(device_id)
        return len(device_ids) * self.unit_mib

    def check_distinct(self, requests: Iterable[Sequence[str]]) -> None:
        """Containers of one request must not share a device."""
        seen: set[str] = set()
        for device_ids in requests:
            for device_id in device_ids:
                if device_id in seen:
                    raise AllocationError(f"device id {device_id} is requested twice")
                seen.add(device_id)

    def container_settings(self, budget_mib: int) -> tuple[dict[str, str], dict[str, str]]:
        """The environment and annotations of a container with `budget_mib` of EPC."""
        value = str(budget_mib)
        return {LIMIT_ENV: value}, {LIMIT_ANNOTATION: value}

    def preferred(
        self, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        """`size` devices from `available`: those that must be included, then the lowest ids."""
        if size < 0:
            raise AllocationError(f"allocation size {size} is negative")
        known = [device for device in available if self.index(device) is not None]
        if len(set(known)) != len(known):
            raise AllocationError("the available devices list an id twice")
        if len(set(must_include)) > size:
            raise AllocationError(
                f"{len(set(must_include))} devices must be included in an allocation of {size}"
            )
        for device_id in must_include:
            if device_id not in known:
                raise AllocationError(
                    f"device id {device_id[:80]!r} must be included but is not available"
                )
        if size > len(known):
            raise AllocationError(
                f"{size} devices asked for, {len(known)} of this plugin's are available"
            )
        chosen = list(dict.fromkeys(must_include))
        rest = sorted(
            (device for device in known if device not in set(chosen)),
            key=lambda device: self.index(device) or 0,
        )
        return chosen + rest[: size - len(chosen)]
