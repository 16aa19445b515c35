"""The runtime-spec's `linux.resources`, checked and typed, without touching the host.

`validate_resources` reads the JSON object of config.json (or of `rune update -r`) into the
classes below and rejects, with a one-line message naming the field, what no cgroup driver
could apply: a value of the wrong JSON type, a number outside what the kernel accepts, a
combination that cannot hold (swap below the memory limit, a quota without its period). An
absent field, `null`, and the value the runtime-spec reserves for "unset" (0 for most limits)
all mean "leave the kernel's value alone". Unknown properties are ignored, as the
runtime-spec requires.

Whether the host can apply what was asked (a controller that is not mounted, a feature of
one cgroup version only) is decided by the driver, which knows the host; see `check_host`
in the drivers.
"""

from __future__ import annotations

from inclavare.cgroups.errors import CgroupError
from inclavare.lightjson import type_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1
UINT32_MAX = (1 << 32) - 1

# The kernel's bounds (kernel/sched/core.c and fair.c, block/blk-cgroup).
CPU_SHARES_MIN = 2
CPU_SHARES_MAX = 262144
CFS_PERIOD_MIN = 1000  # microseconds
CFS_PERIOD_MAX = 1000000
CFS_QUOTA_MIN = 1000
BLKIO_WEIGHT_MIN = 10
BLKIO_WEIGHT_MAX = 1000

# Linux device numbers: 12 bits of major, 20 of minor.
MAJOR_MAX = (1 << 12) - 1
MINOR_MAX = (1 << 20) - 1

DEFAULT_WHERE = "config.json: linux.resources"


class ResourceError(CgroupError):
    """`linux.resources` holds a value that cannot be applied."""


class _Value:
    """Plain typed records: equality and a readable repr from the slots."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __hash__(self) -> int:
        return hash(tuple(repr(getattr(self, name)) for name in self.__slots__))

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__slots__
            if getattr(self, name) not in (None, [], {})
        )
        return f"{type(self).__name__}({fields})"


class Memory(_Value):
    """Bytes, with -1 for "unlimited"; `swap` is memory plus swap, as in cgroup v1."""

    __slots__ = (
        "check_before_update",
        "disable_oom_killer",
        "kernel",
        "kernel_tcp",
        "limit",
        "reservation",
        "swap",
        "swappiness",
        "use_hierarchy",
    )

    def __init__(self) -> None:
        self.limit: int | None = None
        self.reservation: int | None = None
        self.swap: int | None = None
        self.kernel: int | None = None
        self.kernel_tcp: int | None = None
        self.swappiness: int | None = None
        self.disable_oom_killer: bool | None = None
        self.use_hierarchy: bool | None = None
        self.check_before_update: bool | None = None


class Cpu(_Value):
    """Shares (v1 weight), CFS bandwidth and real-time bandwidth in microseconds, cpusets."""

    __slots__ = (
        "burst",
        "cpus",
        "idle",
        "mems",
        "period",
        "quota",
        "realtime_period",
        "realtime_runtime",
        "shares",
    )

    def __init__(self) -> None:
        self.shares: int | None = None
        self.quota: int | None = None
        self.burst: int | None = None
        self.period: int | None = None
        self.realtime_runtime: int | None = None
        self.realtime_period: int | None = None
        self.cpus: str | None = None
        self.mems: str | None = None
        self.idle: int | None = None


class DeviceRule(_Value):
    """One entry of the device allowlist; `major`/`minor` -1 is the wildcard `*`."""

    __slots__ = ("access", "allow", "major", "minor", "type")

    def __init__(
        self, allow: bool, type: str = "a", major: int = -1, minor: int = -1, access: str = "rwm"
    ) -> None:
        self.allow = allow
        self.type = type
        self.major = major
        self.minor = minor
        self.access = access

    def v1_line(self) -> str:
        """The rule as devices.allow / devices.deny read it: `c 1:3 rwm`, or `a` for all."""
        if self.type == "a":
            return "a"
        major = "*" if self.major < 0 else str(self.major)
        minor = "*" if self.minor < 0 else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"


class WeightDevice(_Value):
    __slots__ = ("leaf_weight", "major", "minor", "weight")

    def __init__(self, major: int, minor: int, weight: int | None, leaf_weight: int | None) -> None:
        self.major = major
        self.minor = minor
        self.weight = weight
        self.leaf_weight = leaf_weight


class ThrottleDevice(_Value):
    __slots__ = ("major", "minor", "rate")

    def __init__(self, major: int, minor: int, rate: int) -> None:
        self.major = major
        self.minor = minor
        self.rate = rate


class BlockIO(_Value):
    __slots__ = (
        "leaf_weight",
        "throttle_read_bps",
        "throttle_read_iops",
        "throttle_write_bps",
        "throttle_write_iops",
        "weight",
        "weight_devices",
    )

    def __init__(self) -> None:
        self.weight: int | None = None
        self.leaf_weight: int | None = None
        self.weight_devices: list[WeightDevice] = []
        self.throttle_read_bps: list[ThrottleDevice] = []
        self.throttle_write_bps: list[ThrottleDevice] = []
        self.throttle_read_iops: list[ThrottleDevice] = []
        self.throttle_write_iops: list[ThrottleDevice] = []


class HugepageLimit(_Value):
    """A limit in bytes for one huge page size, named as the kernel does: "2MB", "1GB"."""

    __slots__ = ("limit", "page_size")

    def __init__(self, page_size: str, limit: int) -> None:
        self.page_size = page_size
        self.limit = limit


class Network(_Value):
    __slots__ = ("class_id", "priorities")

    def __init__(self) -> None:
        self.class_id: int | None = None
        self.priorities: list[tuple[str, int]] = []


class Rdma(_Value):
    __slots__ = ("hca_handles", "hca_objects")

    def __init__(self, hca_handles: int | None, hca_objects: int | None) -> None:
        self.hca_handles = hca_handles
        self.hca_objects = hca_objects


class Resources(_Value):
    """`linux.resources`, typed. `devices` is None when the spec gives no list."""

    __slots__ = (
        "block_io",
        "cpu",
        "devices",
        "hugepage_limits",
        "memory",
        "network",
        "pids_limit",
        "rdma",
        "unified",
    )

    def __init__(self) -> None:
        self.memory: Memory | None = None
        self.cpu: Cpu | None = None
        self.pids_limit: int | None = None
        self.block_io: BlockIO | None = None
        self.hugepage_limits: list[HugepageLimit] = []
        self.network: Network | None = None
        self.devices: list[DeviceRule] | None = None
        self.rdma: dict[str, Rdma] = {}
        self.unified: dict[str, str] = {}

    def is_empty(self) -> bool:
        return all(getattr(self, name) in (None, [], {}) for name in self.__slots__)


class _Reader:
    """One JSON object being read, which knows its path for error messages."""

    __slots__ = ("path", "raw")

    def __init__(self, raw: object, path: str) -> None:
        if not isinstance(raw, dict):
            raise ResourceError(f"{path}: must be an object, got {type_name(raw)}")
        self.raw: dict[str, Any] = raw
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}"

    def fail(self, key: str, problem: str) -> ResourceError:
        return ResourceError(f"{self.where(key)}: {problem}")

    def child(self, key: str) -> _Reader | None:
        value = self.raw.get(key)
        return None if value is None else _Reader(value, self.where(key))

    def array(self, key: str) -> list[Any] | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {type_name(value)}")
        return value

    def items(self, key: str) -> list[_Reader]:
        value = self.array(key) or []
        return [_Reader(item, f"{self.where(key)}[{index}]") for index, item in enumerate(value)]

    def integer(
        self, key: str, low: int, high: int, required: bool = False, unset: int | None = None
    ) -> int | None:
        """An integer in [low, high]; `unset` (the spec's "not set" value) reads as None."""
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.fail(key, "required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {type_name(value)}")
        if value == unset:
            return None
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, got {value}")
        return value

    def boolean(self, key: str, required: bool = False) -> bool | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.fail(key, "required")
            return None
        if not isinstance(value, bool):
            raise self.fail(key, f"must be a boolean, got {type_name(value)}")
        return value

    def string(self, key: str, required: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.fail(key, "required")
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {type_name(value)}")
        return value


def _memory_amount(reader: _Reader, key: str) -> int | None:
    """Bytes, -1 for unlimited, 0 for unset."""
    value = reader.integer(key, -1, INT64_MAX, unset=0)
    return value


def _memory(reader: _Reader) -> Memory:
    memory = Memory()
    memory.limit = _memory_amount(reader, "limit")
    memory.reservation = _memory_amount(reader, "reservation")
    memory.swap = _memory_amount(reader, "swap")
    memory.kernel = _memory_amount(reader, "kernel")
    memory.kernel_tcp = _memory_amount(reader, "kernelTCP")
    swappiness = reader.raw.get("swappiness")
    if swappiness is not None:
        if isinstance(swappiness, bool) or not isinstance(swappiness, int):
            raise reader.fail("swappiness", f"must be an integer, got {type_name(swappiness)}")
        if not 0 <= swappiness <= 100:
            raise reader.fail("swappiness", f"must be between 0 and 100, got {swappiness}")
        memory.swappiness = swappiness
    memory.disable_oom_killer = reader.boolean("disableOOMKiller")
    memory.use_hierarchy = reader.boolean("useHierarchy")
    memory.check_before_update = reader.boolean("checkBeforeUpdate")
    if memory.swap is not None and memory.swap > 0:
        if memory.limit is None or memory.limit == -1:
            raise reader.fail(
                "swap", "a memory+swap limit needs a memory.limit (swap counts memory too)"
            )
        if memory.swap < memory.limit:
            raise reader.fail(
                "swap",
                f"below memory.limit ({memory.swap} < {memory.limit}): it is memory plus swap",
            )
    return memory


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's list format ("0-3,6,8-9") as numbers; ValueError when malformed."""
    numbers: list[int] = []
    if not text:
        return numbers
    for part in text.split(","):
        low_text, dash, high_text = part.partition("-")
        if not low_text.isdigit() or (dash and not high_text.isdigit()):
            raise ValueError(part)
        low = int(low_text)
        high = int(high_text) if dash else low
        if high < low or high > 65535:
            raise ValueError(part)
        numbers.extend(range(low, high + 1))
    return numbers


def _cpu_list(reader: _Reader, key: str) -> str | None:
    text = reader.string(key)
    if not text:
        return None
    try:
        parse_cpu_list(text)
    except ValueError:
        raise reader.fail(
            key, f'"{text}" is not a list of numbers and ranges such as "0-3,6"'
        ) from None
    return text


def _cpu(reader: _Reader, partial: bool) -> Cpu:
    cpu = Cpu()
    cpu.shares = reader.integer("shares", CPU_SHARES_MIN, CPU_SHARES_MAX, unset=0)
    quota = reader.integer("quota", -1, INT64_MAX, unset=0)
    if quota is not None and 0 < quota < CFS_QUOTA_MIN:
        raise reader.fail("quota", f"must be -1 or at least {CFS_QUOTA_MIN} microseconds")
    cpu.quota = quota
    cpu.period = reader.integer("period", CFS_PERIOD_MIN, CFS_PERIOD_MAX, unset=0)
    cpu.burst = reader.integer("burst", 0, UINT64_MAX)
    cpu.realtime_runtime = reader.integer("realtimeRuntime", -1, INT64_MAX, unset=0)
    cpu.realtime_period = reader.integer("realtimePeriod", 1, UINT64_MAX, unset=0)
    cpu.cpus = _cpu_list(reader, "cpus")
    cpu.mems = _cpu_list(reader, "mems")
    cpu.idle = reader.integer("idle", 0, 1)
    if cpu.quota is not None and cpu.quota > 0 and cpu.period is None and not partial:
        raise reader.fail(
            "quota", "cpu.quota without cpu.period (the quota is CPU time per period)"
        )
    if cpu.burst and cpu.quota is not None and cpu.quota > 0 and cpu.burst > cpu.quota:
        raise reader.fail("burst", f"above cpu.quota ({cpu.burst} > {cpu.quota})")
    if (
        cpu.realtime_runtime is not None
        and cpu.realtime_runtime > 0
        and cpu.realtime_period is not None
        and cpu.realtime_runtime > cpu.realtime_period
    ):
        raise reader.fail(
            "realtimeRuntime",
            f"above cpu.realtimePeriod ({cpu.realtime_runtime} > {cpu.realtime_period})",
        )
    return cpu


def _device_number(reader: _Reader, key: str, high: int) -> int:
    value = reader.integer(key, -1, high)
    return -1 if value is None else value


def device_rule(reader: _Reader) -> DeviceRule:
    allow = reader.boolean("allow", required=True)
    assert allow is not None
    kind = reader.string("type") or "a"
    if kind not in ("a", "b", "c"):
        raise reader.fail("type", f'unknown device type "{kind}" (expected "a", "b" or "c")')
    access = reader.string("access") or "rwm"
    for letter in access:
        if letter not in "rwm":
            raise reader.fail("access", f'unknown device access "{letter}" in "{access}"')
    if len(set(access)) != len(access):
        raise reader.fail("access", f'"{access}" repeats a letter')
    access = "".join(letter for letter in "rwm" if letter in access)
    major = _device_number(reader, "major", MAJOR_MAX)
    minor = _device_number(reader, "minor", MINOR_MAX)
    if kind == "a" and (major != -1 or minor != -1):
        raise reader.fail("type", 'type "a" (all devices) takes no major or minor number')
    return DeviceRule(allow, kind, major, minor, access)


def _weight(reader: _Reader, key: str) -> int | None:
    return reader.integer(key, BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX, unset=0)


def _block_io(reader: _Reader) -> BlockIO:
    block_io = BlockIO()
    block_io.weight = _weight(reader, "weight")
    block_io.leaf_weight = _weight(reader, "leafWeight")
    for item in reader.items("weightDevice"):
        major = item.integer("major", 0, UINT32_MAX, required=True)
        minor = item.integer("minor", 0, UINT32_MAX, required=True)
        assert major is not None and minor is not None
        weight = _weight(item, "weight")
        leaf_weight = _weight(item, "leafWeight")
        if weight is None and leaf_weight is None:
            raise ResourceError(f"{item.path}: needs a weight or a leafWeight")
        block_io.weight_devices.append(WeightDevice(major, minor, weight, leaf_weight))
    for key, target in (
        ("throttleReadBpsDevice", block_io.throttle_read_bps),
        ("throttleWriteBpsDevice", block_io.throttle_write_bps),
        ("throttleReadIOPSDevice", block_io.throttle_read_iops),
        ("throttleWriteIOPSDevice", block_io.throttle_write_iops),
    ):
        for item in reader.items(key):
            major = item.integer("major", 0, UINT32_MAX, required=True)
            minor = item.integer("minor", 0, UINT32_MAX, required=True)
            rate = item.integer("rate", 0, UINT64_MAX, required=True)
            assert major is not None and minor is not None and rate is not None
            target.append(ThrottleDevice(major, minor, rate))
    return block_io


def hugepage_size_bytes(page_size: str) -> int:
    """ "2MB" -> 2097152; ValueError unless a positive number followed by KB, MB or GB."""
    number, unit = page_size[:-2], page_size[-2:]
    if unit not in ("KB", "MB", "GB") or not number.isdigit() or number.startswith("0"):
        raise ValueError(page_size)
    return int(number) << {"KB": 10, "MB": 20, "GB": 30}[unit]


def _hugepage_limits(reader: _Reader) -> list[HugepageLimit]:
    limits: list[HugepageLimit] = []
    seen: set[str] = set()
    for item in reader.items("hugepageLimits"):
        page_size = item.string("pageSize", required=True)
        assert page_size is not None
        try:
            hugepage_size_bytes(page_size)
        except ValueError:
            raise item.fail(
                "pageSize", f'"{page_size}" is not a page size such as "2MB" or "1GB"'
            ) from None
        if page_size in seen:
            raise item.fail("pageSize", f'"{page_size}" is limited twice')
        seen.add(page_size)
        limit = item.integer("limit", 0, UINT64_MAX, required=True)
        assert limit is not None
        limits.append(HugepageLimit(page_size, limit))
    return limits


def _network(reader: _Reader) -> Network:
    network = Network()
    network.class_id = reader.integer("classID", 0, UINT32_MAX)
    for item in reader.items("priorities"):
        name = item.string("name", required=True)
        if not name or "/" in name or " " in name:
            raise item.fail("name", f'"{name}" is not a network interface name')
        priority = item.integer("priority", 0, UINT32_MAX, required=True)
        assert priority is not None
        network.priorities.append((name, priority))
    return network


def _rdma(reader: _Reader) -> dict[str, Rdma]:
    value = reader.raw.get("rdma")
    if value is None:
        return {}
    table = _Reader(value, reader.where("rdma"))
    limits: dict[str, Rdma] = {}
    for device in table.raw:
        if not device or " " in device or "/" in device:
            raise ResourceError(f"{table.path}: {device!r} is not an RDMA device name")
        entry = table.child(device)
        if entry is None:
            continue
        handles = entry.integer("hcaHandles", 0, UINT32_MAX)
        objects = entry.integer("hcaObjects", 0, UINT32_MAX)
        limits[device] = Rdma(handles, objects)
    return limits


def _unified(reader: _Reader) -> dict[str, str]:
    value = reader.raw.get("unified")
    if value is None:
        return {}
    table = _Reader(value, reader.where("unified"))
    files: dict[str, str] = {}
    for name, content in table.raw.items():
        controller, dot, rest = name.partition(".")
        if not dot or not controller or not rest or "/" in name or name.startswith("cgroup."):
            raise ResourceError(
                f'{table.path}: {name!r} is not a controller\'s file such as "memory.high"'
            )
        if not isinstance(content, str):
            raise table.fail(name, f"must be a string, got {type_name(content)}")
        files[name] = content
    return files


def validate_resources(
    resources: object, where: str = DEFAULT_WHERE, partial: bool = False
) -> Resources:
    """`linux.resources` as typed values; ResourceError (a CgroupError) naming the field.

    `partial` is for `rune update`, whose values are merged into those of the running
    container: a CPU quota may then come without its period (the cgroup keeps its own).
    """
    root = _Reader(resources, where)
    result = Resources()
    memory = root.child("memory")
    if memory is not None:
        result.memory = _memory(memory)
    cpu = root.child("cpu")
    if cpu is not None:
        result.cpu = _cpu(cpu, partial)
    pids = root.child("pids")
    if pids is not None:
        result.pids_limit = pids.integer("limit", -1, INT64_MAX, unset=0)
    block_io = root.child("blockIO")
    if block_io is not None:
        result.block_io = _block_io(block_io)
    result.hugepage_limits = _hugepage_limits(root)
    network = root.child("network")
    if network is not None:
        result.network = _network(network)
    devices = root.array("devices")
    if devices is not None:
        result.devices = [device_rule(item) for item in root.items("devices")]
    result.rdma = _rdma(root)
    result.unified = _unified(root)
    return result


# Conversions of cgroup v1 values to their cgroup v2 equivalents, as runc makes them.


def cpu_shares_to_weight(shares: int) -> int:
    """cpu.shares [2, 262144] to cpu.weight [1, 10000], linearly."""
    return 1 + ((shares - CPU_SHARES_MIN) * 9999) // (CPU_SHARES_MAX - CPU_SHARES_MIN)


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10, 1000] to io.weight [1, 10000], linearly."""
    return 1 + ((weight - BLKIO_WEIGHT_MIN) * 9999) // (BLKIO_WEIGHT_MAX - BLKIO_WEIGHT_MIN)


def swap_to_v2(swap: int, limit: int | None) -> int | None:
    """The spec's memory+swap to memory.swap.max (swap alone); -1 is "max", None unset."""
    if swap == -1:
        return -1
    if limit is None or limit == -1:
        raise ResourceError("linux.resources.memory.swap: a memory+swap limit needs a memory.limit")
    return swap - limit


def merge_resources(current: object, update: object) -> dict[str, Any]:
    """The resources of a running container after `rune update`: each value the update
    gives replaces the current one; lists (devices, throttles) are replaced whole."""
    merged: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
    if not isinstance(update, dict):
        return merged
    for key, value in update.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "unified":
            merged[key] = merge_resources(merged[key], value)
        else:
            merged[key] = value
    return merged
