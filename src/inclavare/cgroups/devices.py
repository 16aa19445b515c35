"""The device allowlist of a container: the rules in force, and what they come to.

A container starts denied every device. The rules then apply in order: the spec's
`linux.resources.devices`, then the devices every container may use (those runc allows: the
null, zero, full, random and urandom devices, ttys, the pty multiplexer and its slaves, the
tun device, and `mknod` of any device), then the devices the spec creates (`linux.devices`).

`Allowlist` evaluates the rules exactly as the cgroup v1 devices controller does when they
are written to devices.allow and devices.deny one by one: a rule for all devices sets the
default and forgets the exceptions; any other rule adds an exception to the default, or
takes access away from an exception with the same type and numbers. cgroup v1 gets the
rules themselves; cgroup v2 gets an eBPF program compiled from the resulting allowlist
(`ebpf.py`), so a rule list means the same on both.
"""

from __future__ import annotations

from inclavare.cgroups.resources import DeviceRule

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

ACCESS_BITS = {"m": 1, "r": 2, "w": 4}

DEFAULT_ALLOWED = (
    DeviceRule(True, "c", -1, -1, "m"),
    DeviceRule(True, "b", -1, -1, "m"),
    DeviceRule(True, "c", 1, 3, "rwm"),  # /dev/null
    DeviceRule(True, "c", 1, 8, "rwm"),  # /dev/random
    DeviceRule(True, "c", 1, 7, "rwm"),  # /dev/full
    DeviceRule(True, "c", 5, 0, "rwm"),  # /dev/tty
    DeviceRule(True, "c", 1, 5, "rwm"),  # /dev/zero
    DeviceRule(True, "c", 1, 9, "rwm"),  # /dev/urandom
    DeviceRule(True, "c", 5, 2, "rwm"),  # /dev/ptmx
    DeviceRule(True, "c", 136, -1, "rwm"),  # /dev/pts/*
    DeviceRule(True, "c", 10, 200, "rwm"),  # /dev/net/tun
)


def container_rules(
    spec_rules: Sequence[DeviceRule] | None, created: Sequence[tuple[str, int, int]] = ()
) -> list[DeviceRule]:
    """Every rule for a container, in order, starting from "deny all"."""
    rules = [DeviceRule(False, "a")]
    rules.extend(spec_rules or [])
    rules.extend(DEFAULT_ALLOWED)
    for kind, major, minor in created:
        if kind in ("c", "u", "b"):
            rules.append(DeviceRule(True, "b" if kind == "b" else "c", major, minor, "rwm"))
    return rules


def access_mask(access: str) -> int:
    mask = 0
    for letter in access:
        mask |= ACCESS_BITS[letter]
    return mask


def access_letters(mask: int) -> str:
    return "".join(letter for letter in "rwm" if mask & ACCESS_BITS[letter])


class Allowlist:
    """A default (allow or deny every device) and exceptions to it, as the kernel keeps them."""

    __slots__ = ("default_allow", "exceptions")

    def __init__(self) -> None:
        self.default_allow = False
        # (type, major, minor) -> access mask; -1 is the wildcard
        self.exceptions: dict[tuple[str, int, int], int] = {}

    @classmethod
    def of(cls, rules: Sequence[DeviceRule]) -> Allowlist:
        allowlist = cls()
        for rule in rules:
            allowlist.apply(rule)
        return allowlist

    def apply(self, rule: DeviceRule) -> None:
        if rule.type == "a":
            self.default_allow = rule.allow
            self.exceptions.clear()
            return
        key = (rule.type, rule.major, rule.minor)
        mask = access_mask(rule.access)
        if rule.allow != self.default_allow:
            self.exceptions[key] = self.exceptions.get(key, 0) | mask
        elif key in self.exceptions:
            remaining = self.exceptions[key] & ~mask
            if remaining:
                self.exceptions[key] = remaining
            else:
                del self.exceptions[key]

    def permits(self, kind: str, major: int, minor: int, access: str) -> bool:
        """Whether an access to one device is allowed, by the devices controller's rules."""
        wanted = access_mask(access)
        for (ex_kind, ex_major, ex_minor), mask in self.exceptions.items():
            if ex_kind != kind or ex_major not in (-1, major) or ex_minor not in (-1, minor):
                continue
            if self.default_allow and mask & wanted:
                return False
            if not self.default_allow and wanted & ~mask == 0:
                return True
        return self.default_allow

    def lines(self) -> list[str]:
        """The allowlist as devices.list shows it in a cgroup that denies by default."""
        if self.default_allow:
            return ["a *:* rwm"]
        return [
            DeviceRule(True, kind, major, minor, access_letters(mask)).v1_line()
            for (kind, major, minor), mask in self.exceptions.items()
        ]
