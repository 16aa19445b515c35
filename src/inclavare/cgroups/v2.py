"""The cgroup v2 driver: one unified hierarchy, the container's cgroup one directory in it.

A controller's files appear in a directory only when its parent enables the controller in
cgroup.subtree_control, so the driver first enables, from the hierarchy's root down to the
container's parent, every controller the root offers (as runc does), and fails only when a
controller that the resources need cannot be enabled.

The spec's resources are cgroup v1 values; they are converted as runc converts them:
cpu.shares to cpu.weight (linear map of [2, 262144] onto [1, 10000]); cpu.quota and
cpu.period to cpu.max ("QUOTA PERIOD", "max" for -1); memory.limit to memory.max;
memory.swap (memory plus swap) to memory.swap.max (swap alone: swap - limit);
memory.reservation to memory.low; blockIO.weight to io.bfq.weight when the kernel has BFQ
(same range), else to io.weight (linear map of [10, 1000] onto [1, 10000]); throttles to
io.max; hugepageLimits to hugetlb.SIZE.max; rdma to rdma.max; `unified` written verbatim;
device rules to an eBPF program (ebpf.py). Real-time CPU bandwidth and the network
controllers do not exist on cgroup v2 and are refused; kernel memory limits, swappiness,
disableOOMKiller and leaf weights have no v2 equivalent and are ignored with a warning.
"""

from __future__ import annotations

import os

from inclavare.cgroups.devices import Allowlist, container_rules
from inclavare.cgroups.driver import (
    FREEZE_TIMEOUT,
    Driver,
    hugepage_sizes,
    read_file,
    wait_until,
    write_file,
)
from inclavare.cgroups.errors import CgroupError
from inclavare.cgroups.resources import (
    blkio_weight_to_io_weight,
    cpu_shares_to_weight,
    swap_to_v2,
)
from inclavare.cgroups.statistics import parse_flat_keyed, stats_v2
from inclavare.cgroups.v1 import needed_controllers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from inclavare.cgroups.resources import BlockIO, Cpu, Memory, Resources

_V2_NAMES = {"blkio": "io"}


def _limit(value: int) -> str:
    return "max" if value == -1 else str(value)


class V2Driver(Driver):
    """A container's directory in a cgroup2 hierarchy mounted at `mount_root`."""

    version = 2

    def __init__(self, directory: str, mount_root: str) -> None:
        self.directory = directory
        self.mount_root = mount_root.rstrip("/") or "/"

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _read(self, name: str) -> str | None:
        return read_file(self._path(name))

    def _write(self, name: str, value: object, what: str) -> None:
        write_file(self._path(name), str(value), what)

    def _has(self, name: str) -> bool:
        return os.path.exists(self._path(name))

    def available_controllers(self) -> set[str]:
        """The controllers the hierarchy's root offers."""
        text = read_file(os.path.join(self.mount_root, "cgroup.controllers")) or ""
        return set(text.split())

    def needed(self, resources: Resources, where: str) -> dict[str, str]:
        needed = {
            _V2_NAMES.get(controller, controller): field
            for controller, field in needed_controllers(resources).items()
        }
        for name in resources.unified:
            needed.setdefault(name.split(".", 1)[0], f"unified.{name}")
        for controller in ("net_cls", "net_prio"):
            if controller in needed:
                raise CgroupError(
                    f"{where}.{needed[controller]}: cgroup v2 has no {controller} controller"
                    " (use an eBPF network program instead)"
                )
        return needed

    # -- create / update

    def check_host(self, resources: Resources, where: str = "linux.resources") -> list[str]:
        available = self.available_controllers()
        for controller, field in self.needed(resources, where).items():
            if controller not in available:
                offered = " ".join(sorted(available)) or "none"
                raise CgroupError(
                    f"{where}.{field}: the {controller} controller is not available in this"
                    f" host's cgroup v2 hierarchy (it offers: {offered})"
                )
        cpu = resources.cpu
        if cpu is not None and (
            cpu.realtime_runtime is not None or cpu.realtime_period is not None
        ):
            raise CgroupError(
                f"{where}.cpu.realtimeRuntime: real-time CPU bandwidth does not exist on cgroup v2"
            )
        warnings: list[str] = []
        memory = resources.memory
        if memory is not None:
            for value, field in (
                (memory.kernel, "kernel"),
                (memory.kernel_tcp, "kernelTCP"),
                (memory.swappiness, "swappiness"),
                (memory.disable_oom_killer, "disableOOMKiller"),
            ):
                if value is not None:
                    warnings.append(f"{where}.memory.{field}: ignored (no cgroup v2 equivalent)")
        block_io = resources.block_io
        if block_io is not None and (
            block_io.leaf_weight is not None
            or any(device.leaf_weight is not None for device in block_io.weight_devices)
        ):
            warnings.append(f"{where}.blockIO.leafWeight: ignored (no cgroup v2 equivalent)")
        return warnings

    def enable_controllers(self, needed: dict[str, str]) -> None:
        """Enable, in every ancestor of the container's cgroup, the controllers its parent
        offers; a controller the resources need must succeed."""
        relative = os.path.relpath(os.path.dirname(self.directory), self.mount_root)
        ancestors = [self.mount_root]
        if relative != ".":
            current = self.mount_root
            for part in relative.split("/"):
                current = os.path.join(current, part)
                ancestors.append(current)
        for ancestor in ancestors:
            offered = (read_file(os.path.join(ancestor, "cgroup.controllers")) or "").split()
            enabled = (read_file(os.path.join(ancestor, "cgroup.subtree_control")) or "").split()
            missing = [name for name in offered if name not in enabled]
            if not missing:
                continue
            path = os.path.join(ancestor, "cgroup.subtree_control")
            try:
                write_file(path, " ".join(f"+{name}" for name in missing))
            except CgroupError:
                # One at a time, to tell which one the kernel refuses.
                for name in missing:
                    try:
                        write_file(path, f"+{name}")
                    except CgroupError as error:
                        if name in needed:
                            raise CgroupError(
                                f"{needed[name]}: cannot enable the {name} controller in"
                                f" {ancestor}: {error}"
                            ) from None

    def apply(
        self,
        resources: Resources,
        created_devices: Sequence[tuple[str, int, int]] = (),
        update: bool = False,
    ) -> None:
        if not update:
            self.enable_controllers(self.needed(resources, "linux.resources"))
        cpu = resources.cpu
        if cpu is not None:
            if cpu.cpus is not None:
                self._cpuset("cpus", cpu.cpus)
            if cpu.mems is not None:
                self._cpuset("mems", cpu.mems)
        if resources.memory is not None:
            self._memory(resources.memory, update)
        if cpu is not None:
            self._cpu(cpu)
        if resources.pids_limit is not None:
            self._write("pids.max", _limit(max(resources.pids_limit, -1)), "pids.limit")
        if resources.block_io is not None:
            self._block_io(resources.block_io)
        for hugepage in resources.hugepage_limits:
            self._write(
                f"hugetlb.{hugepage.page_size}.max",
                hugepage.limit,
                f"hugepageLimits {hugepage.page_size}",
            )
        for device, limits in resources.rdma.items():
            handles = "max" if limits.hca_handles is None else limits.hca_handles
            objects = "max" if limits.hca_objects is None else limits.hca_objects
            self._write("rdma.max", f"{device} hca_handle={handles} hca_object={objects}", "rdma")
        for name, value in resources.unified.items():
            if not self._has(name):
                raise CgroupError(
                    f"linux.resources.unified.{name}: this cgroup has no such file"
                    " (unknown, or its controller is not enabled)"
                )
            self._write(name, value, f"unified.{name}")
        if not update:
            from inclavare.cgroups.ebpf import attach_device_program

            rules = container_rules(resources.devices, created_devices)
            attach_device_program(self.directory, Allowlist.of(rules))

    def _cpuset(self, kind: str, value: str) -> None:
        try:
            self._write(f"cpuset.{kind}", value, f"cpu.{kind}")
        except CgroupError:
            parent = os.path.dirname(self.directory)
            offered = (read_file(os.path.join(parent, f"cpuset.{kind}.effective")) or "").strip()
            if not offered:
                raise
            what = "CPUs" if kind == "cpus" else "memory nodes"
            raise CgroupError(
                f'cpu.{kind}: "{value}" is not within the {what} this cgroup may use ({offered})'
            ) from None

    def _memory(self, memory: Memory, update: bool) -> None:
        limit = memory.limit
        if update and memory.check_before_update and limit is not None and limit > 0:
            usage = int(self._read("memory.current") or 0)
            if limit < usage:
                raise CgroupError(
                    f"memory.limit: {limit} is below the container's current usage {usage}"
                )
        if limit is not None:
            self._write("memory.max", _limit(limit), "memory.limit")
        swap: int | None = memory.swap
        if swap is None and limit == -1:
            swap = -1  # "unlimited memory" frees swap too
        if swap is not None:
            swap_max = swap_to_v2(swap, limit)
            if self._has("memory.swap.max"):
                assert swap_max is not None
                self._write("memory.swap.max", _limit(swap_max), "memory.swap")
            elif swap_max not in (-1, 0):
                raise CgroupError(
                    "memory.swap: this kernel does not account swap (no memory.swap.max)"
                )
        if memory.reservation is not None:
            self._write("memory.low", _limit(memory.reservation), "memory.reservation")

    def _cpu(self, cpu: Cpu) -> None:
        if cpu.shares is not None:
            self._write("cpu.weight", cpu_shares_to_weight(cpu.shares), "cpu.shares")
        if cpu.quota is not None or cpu.period is not None:
            if cpu.quota is not None:
                quota = _limit(cpu.quota)
            else:
                quota = (self._read("cpu.max") or "max").split()[0]
            value = quota if cpu.period is None else f"{quota} {cpu.period}"
            self._write("cpu.max", value, "cpu.quota")
        if cpu.burst is not None:
            self._write("cpu.max.burst", cpu.burst, "cpu.burst")
        if cpu.idle is not None:
            self._write("cpu.idle", cpu.idle, "cpu.idle")

    def _block_io(self, block_io: BlockIO) -> None:
        bfq = self._has("io.bfq.weight")
        if block_io.weight is not None:
            if bfq:
                self._write("io.bfq.weight", block_io.weight, "blockIO.weight")
            else:
                weight = blkio_weight_to_io_weight(block_io.weight)
                self._write("io.weight", f"default {weight}", "blockIO.weight")
        for device in block_io.weight_devices:
            if device.weight is None:
                continue
            if bfq:
                line = f"{device.major}:{device.minor} {device.weight}"
                self._write("io.bfq.weight", line, "blockIO.weightDevice")
            else:
                weight = blkio_weight_to_io_weight(device.weight)
                line = f"{device.major}:{device.minor} {weight}"
                self._write("io.weight", line, "blockIO.weightDevice")
        limits: dict[tuple[int, int], list[str]] = {}
        for key, throttles in (
            ("rbps", block_io.throttle_read_bps),
            ("wbps", block_io.throttle_write_bps),
            ("riops", block_io.throttle_read_iops),
            ("wiops", block_io.throttle_write_iops),
        ):
            for throttle in throttles:
                # 0 is "no limit" in the spec's v1 terms; io.max spells it "max".
                rate = "max" if throttle.rate == 0 else str(throttle.rate)
                limits.setdefault((throttle.major, throttle.minor), []).append(f"{key}={rate}")
        for (major, minor), settings in limits.items():
            self._write("io.max", f"{major}:{minor} {' '.join(settings)}", "blockIO.throttle")

    # -- pause / resume

    def _frozen_event(self) -> int:
        return parse_flat_keyed(self._read("cgroup.events")).get("frozen", -1)

    def freeze(self, timeout: float = FREEZE_TIMEOUT) -> None:
        self._write("cgroup.freeze", "1", "pause")
        if not wait_until(lambda: self._frozen_event() == 1, timeout):
            self.thaw()
            raise CgroupError(f"pause: the container's processes did not freeze in {timeout:g} s")

    def thaw(self) -> None:
        self._write("cgroup.freeze", "0", "resume")
        if not wait_until(lambda: self._frozen_event() != 1, FREEZE_TIMEOUT):
            raise CgroupError("resume: the container's processes did not thaw")

    def is_frozen(self) -> bool:
        return (self._read("cgroup.freeze") or "").strip() == "1"

    # -- events, ps

    def stats(self) -> dict[str, Any]:
        return stats_v2(self._read, hugepage_sizes())

    def oom_kills(self) -> int:
        return parse_flat_keyed(self._read("memory.events")).get("oom_kill", 0)

    def processes(self) -> list[int]:
        return [int(line) for line in (self._read("cgroup.procs") or "").split()]
