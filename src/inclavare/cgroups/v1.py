"""The cgroup v1 driver: a hierarchy per controller (or a few controllers per hierarchy), the
container's cgroup a directory in each. It also serves the "hybrid" layout, whose cgroup2
hierarchy holds no controller and is only joined.

Files written, by resource: cpuset.cpus/mems; devices.deny/allow; memory.limit_in_bytes,
memory.memsw.limit_in_bytes (the spec's `swap` is memory plus swap, as here),
memory.soft_limit_in_bytes, memory.kmem[.tcp].limit_in_bytes (where the kernel still has
them; recent kernels accept and ignore the first), memory.swappiness, memory.oom_control;
cpu.shares, cpu.cfs_period_us, cpu.cfs_quota_us, cpu.cfs_burst_us, cpu.rt_period_us,
cpu.rt_runtime_us, cpu.idle; pids.max; blkio.[bfq.]weight, blkio.[bfq.]weight_device,
blkio.leaf_weight[_device], blkio.throttle.*_device; hugetlb.SIZE.limit_in_bytes;
net_cls.classid; net_prio.ifpriomap; rdma.max.
"""

from __future__ import annotations

import os

from inclavare.cgroups.devices import container_rules
from inclavare.cgroups.driver import (
    FREEZE_TIMEOUT,
    Driver,
    hugepage_sizes,
    read_file,
    wait_until,
    write_file,
)
from inclavare.cgroups.errors import CgroupError
from inclavare.cgroups.statistics import parse_flat_keyed, stats_v1

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from inclavare.cgroups.resources import BlockIO, Cpu, DeviceRule, Memory, Resources


def needed_controllers(resources: Resources) -> dict[str, str]:
    """controller -> the spec field that needs it."""
    needed: dict[str, str] = {}
    if resources.memory is not None:
        memory = resources.memory
        if any(
            value is not None
            for value in (
                memory.limit,
                memory.reservation,
                memory.swap,
                memory.kernel,
                memory.kernel_tcp,
                memory.swappiness,
                memory.disable_oom_killer,
            )
        ):
            needed["memory"] = "memory"
    if resources.cpu is not None:
        cpu = resources.cpu
        if any(
            value is not None
            for value in (
                cpu.shares,
                cpu.quota,
                cpu.period,
                cpu.burst,
                cpu.realtime_runtime,
                cpu.realtime_period,
                cpu.idle,
            )
        ):
            needed["cpu"] = "cpu"
        if cpu.cpus is not None or cpu.mems is not None:
            needed["cpuset"] = "cpu.cpus" if cpu.cpus is not None else "cpu.mems"
    if resources.pids_limit is not None:
        needed["pids"] = "pids"
    if resources.block_io is not None:
        block_io = resources.block_io
        if (
            block_io.weight is not None
            or block_io.leaf_weight is not None
            or block_io.weight_devices
            or block_io.throttle_read_bps
            or block_io.throttle_write_bps
            or block_io.throttle_read_iops
            or block_io.throttle_write_iops
        ):
            needed["blkio"] = "blockIO"
    if resources.hugepage_limits:
        needed["hugetlb"] = "hugepageLimits"
    if resources.network is not None:
        if resources.network.class_id is not None:
            needed["net_cls"] = "network.classID"
        if resources.network.priorities:
            needed["net_prio"] = "network.priorities"
    if resources.rdma:
        needed["rdma"] = "rdma"
    return needed


class V1Driver(Driver):
    """A container's cgroup v1 directories, by controller."""

    version = 1

    def __init__(self, directories: dict[str, str], other_directories: Sequence[str] = ()) -> None:
        # controller name ("memory", "cpu", ...) -> the container's directory in its hierarchy
        self.directories = directories
        # the directories of hierarchies without controllers (name=systemd, hybrid cgroup2)
        self.other_directories = list(other_directories)

    def _path(self, controller: str, name: str) -> str:
        directory = self.directories.get(controller)
        if directory is None:
            raise CgroupError(f"the {controller} controller is not mounted on this host")
        return os.path.join(directory, name)

    def _read(self, name: str) -> str | None:
        """A control file by name, from the hierarchy of the controller it belongs to."""
        directory = self.directories.get(name.split(".", 1)[0])
        return None if directory is None else read_file(os.path.join(directory, name))

    def _write(self, controller: str, name: str, value: object, what: str) -> None:
        write_file(self._path(controller, name), str(value), what)

    def _has(self, controller: str, name: str) -> bool:
        directory = self.directories.get(controller)
        return directory is not None and os.path.exists(os.path.join(directory, name))

    # -- create / update

    def check_host(self, resources: Resources, where: str = "linux.resources") -> list[str]:
        for controller, field in needed_controllers(resources).items():
            if controller not in self.directories:
                raise CgroupError(
                    f"{where}.{field}: the {controller} controller is not mounted on this host"
                    " (cgroup v1)"
                )
        if resources.unified:
            raise CgroupError(
                f"{where}.unified: needs cgroup v2, and this host's controllers are on cgroup v1"
            )
        warnings: list[str] = []
        if "devices" not in self.directories:
            if resources.devices:
                raise CgroupError(
                    f"{where}.devices: the devices controller is not mounted on this host"
                )
            warnings.append("the devices controller is not mounted: devices are not restricted")
        if resources.memory is not None and resources.memory.use_hierarchy is False:
            warnings.append(f"{where}.memory.useHierarchy: ignored (always hierarchical)")
        return warnings

    def apply(
        self,
        resources: Resources,
        created_devices: Sequence[tuple[str, int, int]] = (),
        update: bool = False,
    ) -> None:
        cpu = resources.cpu
        if cpu is not None:
            if cpu.cpus is not None:
                self._cpuset("cpus", cpu.cpus)
            if cpu.mems is not None:
                self._cpuset("mems", cpu.mems)
        if not update and "devices" in self.directories:
            self.apply_devices(container_rules(resources.devices, created_devices))
        if resources.memory is not None:
            self._memory(resources.memory, update)
        if cpu is not None:
            self._cpu(cpu)
        if resources.pids_limit is not None:
            limit = "max" if resources.pids_limit < 0 else resources.pids_limit
            self._write("pids", "pids.max", limit, "pids.limit")
        if resources.block_io is not None:
            self._block_io(resources.block_io)
        for hugepage in resources.hugepage_limits:
            self._write(
                "hugetlb",
                f"hugetlb.{hugepage.page_size}.limit_in_bytes",
                hugepage.limit,
                f"hugepageLimits {hugepage.page_size}",
            )
        if resources.network is not None:
            if resources.network.class_id is not None:
                self._write("net_cls", "net_cls.classid", resources.network.class_id, "classID")
            for name, priority in resources.network.priorities:
                self._write("net_prio", "net_prio.ifpriomap", f"{name} {priority}", "priorities")
        for device, limits in resources.rdma.items():
            handles = "max" if limits.hca_handles is None else limits.hca_handles
            objects = "max" if limits.hca_objects is None else limits.hca_objects
            self._write(
                "rdma", "rdma.max", f"{device} hca_handle={handles} hca_object={objects}", "rdma"
            )

    def _cpuset(self, kind: str, value: str) -> None:
        try:
            self._write("cpuset", f"cpuset.{kind}", value, f"cpu.{kind}")
        except CgroupError:
            parent = os.path.dirname(self.directories["cpuset"])
            offered = (read_file(os.path.join(parent, f"cpuset.effective_{kind}")) or "").strip()
            if not offered:
                raise
            what = "CPUs" if kind == "cpus" else "memory nodes"
            raise CgroupError(
                f'cpu.{kind}: "{value}" is not within the {what} this cgroup may use ({offered})'
            ) from None

    def apply_devices(self, rules: Sequence[DeviceRule]) -> None:
        """Write the rules in order; the kernel keeps the resulting allowlist."""
        for rule in rules:
            name = "devices.allow" if rule.allow else "devices.deny"
            self._write("devices", name, rule.v1_line(), "devices")

    def device_allowlist(self) -> list[str]:
        """devices.list: the allowlist in force."""
        return (self._read("devices.list") or "").split("\n")[:-1]

    def _memory(self, memory: Memory, update: bool) -> None:
        limit, swap = memory.limit, memory.swap
        has_memsw = self._has("memory", "memory.memsw.limit_in_bytes")
        if limit == -1 and swap is None and has_memsw:
            swap = -1  # "unlimited memory" frees swap too
        if update and memory.check_before_update and limit is not None and limit > 0:
            usage = int(self._read("memory.usage_in_bytes") or 0)
            if limit < usage:
                raise CgroupError(
                    f"memory.limit: {limit} is below the container's current usage {usage}"
                )
        if swap is not None and not has_memsw:
            if swap != -1 and swap != limit:
                raise CgroupError(
                    "memory.swap: this kernel does not account swap (no memory.memsw files)"
                )
            swap = None
        # The kernel keeps memory.limit <= memory.memsw.limit at every step: raise the
        # memory+swap limit first when it grows past the current memory limit.
        current = int(self._read("memory.limit_in_bytes") or 0)
        swap_first = swap is not None and (swap == -1 or swap >= current)
        if swap is not None and swap_first:
            self._memory_limit("memory.memsw.limit_in_bytes", swap, "memory.swap")
        if limit is not None:
            self._memory_limit("memory.limit_in_bytes", limit, "memory.limit")
        if swap is not None and not swap_first:
            self._memory_limit("memory.memsw.limit_in_bytes", swap, "memory.swap")
        if memory.reservation is not None:
            self._write(
                "memory", "memory.soft_limit_in_bytes", memory.reservation, "memory.reservation"
            )
        if memory.kernel is not None and self._has("memory", "memory.kmem.limit_in_bytes"):
            self._write("memory", "memory.kmem.limit_in_bytes", memory.kernel, "memory.kernel")
        if memory.kernel_tcp is not None and self._has("memory", "memory.kmem.tcp.limit_in_bytes"):
            self._write(
                "memory", "memory.kmem.tcp.limit_in_bytes", memory.kernel_tcp, "memory.kernelTCP"
            )
        if memory.swappiness is not None:
            self._write("memory", "memory.swappiness", memory.swappiness, "memory.swappiness")
        if memory.disable_oom_killer is not None:
            self._write(
                "memory",
                "memory.oom_control",
                1 if memory.disable_oom_killer else 0,
                "memory.disableOOMKiller",
            )

    def _memory_limit(self, name: str, value: int, what: str) -> None:
        try:
            self._write("memory", name, value, what)
        except CgroupError as error:
            usage = self._read("memory.usage_in_bytes")
            if usage is not None and value != -1 and value < int(usage):
                raise CgroupError(
                    f"{what}: {value} bytes is below the container's current usage"
                    f" ({int(usage)} bytes), which the kernel could not reclaim"
                ) from None
            raise error from None

    def _cpu(self, cpu: Cpu) -> None:
        if cpu.shares is not None:
            self._write("cpu", "cpu.shares", cpu.shares, "cpu.shares")
        if cpu.period is not None:
            self._write("cpu", "cpu.cfs_period_us", cpu.period, "cpu.period")
        if cpu.quota is not None:
            self._write("cpu", "cpu.cfs_quota_us", cpu.quota, "cpu.quota")
        if cpu.burst is not None:
            self._write("cpu", "cpu.cfs_burst_us", cpu.burst, "cpu.burst")
        if cpu.realtime_period is not None or cpu.realtime_runtime is not None:
            # The kernel keeps runtime <= period: shrink the runtime first when the new
            # period is shorter than the runtime in force.
            runtime = int(self._read("cpu.rt_runtime_us") or 0)
            if cpu.realtime_period is not None and cpu.realtime_period < runtime:
                if cpu.realtime_runtime is not None:
                    self._realtime("cpu.rt_runtime_us", cpu.realtime_runtime, "realtimeRuntime")
                self._realtime("cpu.rt_period_us", cpu.realtime_period, "realtimePeriod")
            else:
                if cpu.realtime_period is not None:
                    self._realtime("cpu.rt_period_us", cpu.realtime_period, "realtimePeriod")
                if cpu.realtime_runtime is not None:
                    self._realtime("cpu.rt_runtime_us", cpu.realtime_runtime, "realtimeRuntime")
        if cpu.idle is not None:
            self._write("cpu", "cpu.idle", cpu.idle, "cpu.idle")

    def _realtime(self, name: str, value: int, what: str) -> None:
        if not self._has("cpu", name):
            raise CgroupError(f"cpu.{what}: this kernel has no real-time group scheduling ({name})")
        self._write("cpu", name, value, f"cpu.{what}")

    def _block_io(self, block_io: BlockIO) -> None:
        # Kernels without CFQ keep the weights in BFQ's files.
        bfq = "" if self._has("blkio", "blkio.weight") else "bfq."
        if block_io.weight is not None:
            self._write("blkio", f"blkio.{bfq}weight", block_io.weight, "blockIO.weight")
        if block_io.leaf_weight is not None:
            self._write("blkio", "blkio.leaf_weight", block_io.leaf_weight, "blockIO.leafWeight")
        for device in block_io.weight_devices:
            if device.weight is not None:
                try:
                    self._write(
                        "blkio",
                        f"blkio.{bfq}weight_device",
                        f"{device.major}:{device.minor} {device.weight}",
                        "blockIO.weightDevice",
                    )
                except CgroupError as error:
                    raise CgroupError(
                        f"{error} (per-device weights need the BFQ or CFQ I/O scheduler"
                        f" on device {device.major}:{device.minor})"
                    ) from None
            if device.leaf_weight is not None:
                self._write(
                    "blkio",
                    "blkio.leaf_weight_device",
                    f"{device.major}:{device.minor} {device.leaf_weight}",
                    "blockIO.weightDevice.leafWeight",
                )
        for name, throttles, what in (
            ("read_bps_device", block_io.throttle_read_bps, "throttleReadBpsDevice"),
            ("write_bps_device", block_io.throttle_write_bps, "throttleWriteBpsDevice"),
            ("read_iops_device", block_io.throttle_read_iops, "throttleReadIOPSDevice"),
            ("write_iops_device", block_io.throttle_write_iops, "throttleWriteIOPSDevice"),
        ):
            for throttle in throttles:
                self._write(
                    "blkio",
                    f"blkio.throttle.{name}",
                    f"{throttle.major}:{throttle.minor} {throttle.rate}",
                    f"blockIO.{what}",
                )

    # -- pause / resume

    def _freezer_state(self) -> str:
        return (self._read("freezer.state") or "").strip()

    def _cgroup2_freezer(self) -> Driver | None:
        """Without a v1 freezer, a hybrid host's cgroup2 directory can freeze (cgroup.freeze
        is part of cgroup2 itself, not of a controller)."""
        if "freezer" in self.directories:
            return None
        for directory in self.other_directories:
            if os.path.exists(os.path.join(directory, "cgroup.freeze")):
                from inclavare.cgroups.v2 import V2Driver

                return V2Driver(directory, os.path.dirname(directory))
        return None

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        fallback = self._cgroup2_freezer()
        if fallback is not None:
            fallback.freeze(timeout)
            return
        self._write("freezer", "freezer.state", "FROZEN", "pause")

        def frozen() -> bool:
            state = self._freezer_state()
            if state == "FREEZING":
                # A task that was busy in the kernel can hold up freezing: ask again.
                self._write("freezer", "freezer.state", "FROZEN", "pause")
            return state == "FROZEN"

        if not wait_until(frozen, timeout):
            self.thaw()
            raise CgroupError(f"pause: the container's processes did not freeze in {timeout:g} s")

    def thaw(self) -> None:
        fallback = self._cgroup2_freezer()
        if fallback is not None:
            fallback.thaw()
            return
        self._write("freezer", "freezer.state", "THAWED", "resume")
        if not wait_until(lambda: self._freezer_state() == "THAWED", FREEZE_TIMEOUT):
            raise CgroupError("resume: the container's processes did not thaw")

    def is_frozen(self) -> bool:
        fallback = self._cgroup2_freezer()
        if fallback is not None:
            return fallback.is_frozen()
        return self._freezer_state() in ("FROZEN", "FREEZING")

    # -- events, ps

    def stats(self) -> dict[str, Any]:
        return stats_v1(self._read, hugepage_sizes())

    def oom_kills(self) -> int:
        control = parse_flat_keyed(self._read("memory.oom_control"))
        return control.get("oom_kill", 0)

    def processes(self) -> list[int]:
        for directory in [*self.directories.values(), *self.other_directories]:
            text = read_file(os.path.join(directory, "cgroup.procs"))
            if text is not None:
                return [int(line) for line in text.split()]
        return []
