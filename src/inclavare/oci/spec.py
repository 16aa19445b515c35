"""The OCI runtime-spec configuration (config.json): parsed, checked, and typed.

`load_spec` turns the JSON document into plain objects and rejects what a runtime cannot run,
with a message that names the field ("config.json: process.args: must be a non-empty list
of strings"). Unknown properties are ignored, as the runtime-spec requires.
"""

from __future__ import annotations

from inclavare.errors import InclavareError
from inclavare.lightjson import type_name
from inclavare.linux.constants import CAPABILITIES, NAMESPACES, RLIMITS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUPPORTED_OCI_VERSION = "1.1.0"
HOOK_KINDS = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)


class SpecError(InclavareError):
    """config.json is malformed or asks for something impossible."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"config.json: {where}: {problem}" if where else f"config.json: {problem}")


_JSON_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
}


class _Object:
    """A JSON object being read, which knows its path for error messages."""

    __slots__ = ("path", "raw")

    def __init__(self, raw: object, path: str) -> None:
        if not isinstance(raw, dict):
            raise SpecError(path, f"must be an object, got {type_name(raw)}")
        self.raw: dict[str, Any] = raw
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def _get(self, key: str, kind: type, required: bool, default: Any) -> Any:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise SpecError(self.where(key), "required")
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise SpecError(
                self.where(key), f"must be {_JSON_TYPE_NAMES[kind]}, got {type_name(value)}"
            )
        return value

    def string(self, key: str, default: str = "", required: bool = False) -> str:
        value: str = self._get(key, str, required, default)
        return value

    def integer(
        self, key: str, default: int | None = None, required: bool = False, minimum: int = 0
    ) -> int | None:
        value: int | None = self._get(key, int, required, default)
        if value is not None and value < minimum:
            raise SpecError(self.where(key), f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value: bool = self._get(key, bool, False, default)
        return value

    def strings(self, key: str, required: bool = False) -> list[str]:
        value: list[Any] = self._get(key, list, required, [])
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise SpecError(
                    f"{self.where(key)}[{index}]", f"must be a string, got {type_name(item)}"
                )
        return value

    def objects(self, key: str) -> list[_Object]:
        value: list[Any] = self._get(key, list, False, [])
        return [_Object(item, f"{self.where(key)}[{index}]") for index, item in enumerate(value)]

    def child(self, key: str, required: bool = False) -> _Object | None:
        value = self._get(key, dict, required, None)
        return None if value is None else _Object(value, self.where(key))

    def string_map(self, key: str) -> dict[str, str]:
        value: dict[str, Any] = self._get(key, dict, False, {})
        for name, item in value.items():
            if not isinstance(item, str):
                raise SpecError(f"{self.where(key)}.{name}", "must be a string")
        return value


def _absolute(path: str, where: str) -> str:
    if not path.startswith("/"):
        raise SpecError(where, f"must be an absolute path, got {path!r}")
    return path


class User:
    __slots__ = ("additional_gids", "gid", "uid", "umask")

    def __init__(self, obj: _Object) -> None:
        self.uid = obj.integer("uid", required=True) or 0
        self.gid = obj.integer("gid", required=True) or 0
        self.umask = obj.integer("umask")
        gids = obj._get("additionalGids", list, False, [])
        for index, gid in enumerate(gids):
            if not isinstance(gid, int) or isinstance(gid, bool) or gid < 0:
                raise SpecError(f"{obj.where('additionalGids')}[{index}]", "must be a group id")
        self.additional_gids: list[int] = gids


class Capabilities:
    """The five capability sets, as names; every name is a capability Linux defines."""

    __slots__ = ("ambient", "bounding", "effective", "inheritable", "permitted")

    def __init__(self, obj: _Object) -> None:
        self.bounding = self._names(obj, "bounding")
        self.effective = self._names(obj, "effective")
        self.inheritable = self._names(obj, "inheritable")
        self.permitted = self._names(obj, "permitted")
        self.ambient = self._names(obj, "ambient")

    @staticmethod
    def _names(obj: _Object, key: str) -> list[str]:
        names = obj.strings(key)
        for name in names:
            if name not in CAPABILITIES:
                raise SpecError(obj.where(key), f"unknown capability {name!r}")
        return names


class Rlimit:
    __slots__ = ("hard", "soft", "type")

    def __init__(self, obj: _Object) -> None:
        self.type = obj.string("type", required=True)
        if self.type not in RLIMITS:
            raise SpecError(obj.where("type"), f"unknown rlimit {self.type!r}")
        self.soft = obj.integer("soft", required=True) or 0
        self.hard = obj.integer("hard", required=True) or 0
        if self.soft > self.hard:
            raise SpecError(obj.path, f"soft limit {self.soft} exceeds hard limit {self.hard}")


class Process:
    __slots__ = (
        "apparmor_profile",
        "args",
        "capabilities",
        "console_size",
        "cwd",
        "env",
        "no_new_privileges",
        "oom_score_adj",
        "rlimits",
        "selinux_label",
        "terminal",
        "user",
    )

    def __init__(self, obj: _Object) -> None:
        self.terminal = obj.boolean("terminal")
        size = obj.child("consoleSize")
        self.console_size = (
            None
            if size is None
            else (size.integer("height", required=True), size.integer("width", required=True))
        )
        user = obj.child("user", required=True)
        assert user is not None
        self.user = User(user)
        self.args = obj.strings("args", required=True)
        if not self.args:
            raise SpecError(obj.where("args"), "must not be empty")
        self.env = obj.strings("env")
        for index, entry in enumerate(self.env):
            if "=" not in entry:
                raise SpecError(f"{obj.where('env')}[{index}]", f"{entry!r} is not NAME=VALUE")
        self.cwd = _absolute(obj.string("cwd", required=True), obj.where("cwd"))
        caps = obj.child("capabilities")
        self.capabilities = None if caps is None else Capabilities(caps)
        self.rlimits = [Rlimit(item) for item in obj.objects("rlimits")]
        seen: set[str] = set()
        for rlimit in self.rlimits:
            if rlimit.type in seen:
                raise SpecError(obj.where("rlimits"), f"duplicate rlimit {rlimit.type}")
            seen.add(rlimit.type)
        self.no_new_privileges = obj.boolean("noNewPrivileges")
        self.apparmor_profile = obj.string("apparmorProfile")
        self.selinux_label = obj.string("selinuxLabel")
        self.oom_score_adj = obj.integer("oomScoreAdj", minimum=-1000)
        if self.oom_score_adj is not None and self.oom_score_adj > 1000:
            raise SpecError(obj.where("oomScoreAdj"), "must be between -1000 and 1000")


class Root:
    __slots__ = ("path", "readonly")

    def __init__(self, obj: _Object) -> None:
        self.path = obj.string("path", required=True)
        self.readonly = obj.boolean("readonly")


class Mount:
    __slots__ = ("destination", "options", "source", "type")

    def __init__(self, obj: _Object) -> None:
        self.destination = _absolute(
            obj.string("destination", required=True), obj.where("destination")
        )
        self.type = obj.string("type")
        self.source = obj.string("source")
        self.options = obj.strings("options")

    @property
    def is_bind(self) -> bool:
        return self.type == "bind" or "bind" in self.options or "rbind" in self.options


class Hook:
    __slots__ = ("args", "env", "path", "timeout")

    def __init__(self, obj: _Object) -> None:
        self.path = _absolute(obj.string("path", required=True), obj.where("path"))
        self.args = obj.strings("args")
        self.env = obj.strings("env")
        self.timeout = obj.integer("timeout")
        if self.timeout is not None and self.timeout <= 0:
            raise SpecError(obj.where("timeout"), "must be greater than zero")


class Namespace:
    __slots__ = ("path", "type")

    def __init__(self, obj: _Object) -> None:
        self.type = obj.string("type", required=True)
        if self.type not in NAMESPACES:
            raise SpecError(obj.where("type"), f"unknown namespace type {self.type!r}")
        self.path = obj.string("path")


class IDMapping:
    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, obj: _Object) -> None:
        self.container_id = obj.integer("containerID", required=True) or 0
        self.host_id = obj.integer("hostID", required=True) or 0
        self.size = obj.integer("size", required=True, minimum=1) or 1


class Device:
    __slots__ = ("file_mode", "gid", "major", "minor", "path", "type", "uid")

    def __init__(
        self,
        path: str,
        kind: str,
        major: int,
        minor: int,
        file_mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        self.path = path
        self.type = kind
        self.major = major
        self.minor = minor
        self.file_mode = file_mode
        self.uid = uid
        self.gid = gid

    @staticmethod
    def from_json(obj: _Object) -> Device:
        path = _absolute(obj.string("path", required=True), obj.where("path"))
        kind = obj.string("type", required=True)
        if kind not in ("c", "u", "b", "p"):
            raise SpecError(obj.where("type"), f"unknown device type {kind!r}")
        needs_numbers = kind != "p"
        return Device(
            path,
            kind,
            obj.integer("major", required=needs_numbers) or 0,
            obj.integer("minor", required=needs_numbers) or 0,
            obj.integer("fileMode"),
            obj.integer("uid"),
            obj.integer("gid"),
        )


class Linux:
    __slots__ = (
        "cgroups_path",
        "devices",
        "gid_mappings",
        "masked_paths",
        "mount_label",
        "namespaces",
        "readonly_paths",
        "resources",
        "rootfs_propagation",
        "seccomp",
        "sysctl",
        "time_offsets",
        "uid_mappings",
    )

    def __init__(self, obj: _Object) -> None:
        self.namespaces = [Namespace(item) for item in obj.objects("namespaces")]
        seen: set[str] = set()
        for namespace in self.namespaces:
            if namespace.type in seen:
                raise SpecError(obj.where("namespaces"), f"duplicate {namespace.type} namespace")
            seen.add(namespace.type)
        self.uid_mappings = [IDMapping(item) for item in obj.objects("uidMappings")]
        self.gid_mappings = [IDMapping(item) for item in obj.objects("gidMappings")]
        self.devices = [Device.from_json(item) for item in obj.objects("devices")]
        self.cgroups_path = obj.string("cgroupsPath")
        resources = obj.child("resources")
        self.resources: dict[str, Any] = {} if resources is None else resources.raw
        propagation = obj.string("rootfsPropagation")
        if propagation and propagation not in ("shared", "slave", "private", "unbindable"):
            raise SpecError(obj.where("rootfsPropagation"), f"unknown propagation {propagation!r}")
        self.rootfs_propagation = propagation
        self.masked_paths = obj.strings("maskedPaths")
        self.readonly_paths = obj.strings("readonlyPaths")
        self.sysctl = obj.string_map("sysctl")
        seccomp = obj.child("seccomp")
        self.seccomp: dict[str, Any] | None = None if seccomp is None else seccomp.raw
        self.mount_label = obj.string("mountLabel")
        self.time_offsets: dict[str, tuple[int, int]] = {}
        offsets = obj.child("timeOffsets")
        if offsets is not None:
            for clock in offsets.raw:
                if clock not in ("monotonic", "boottime"):
                    raise SpecError(offsets.where(clock), "unknown clock")
                offset = offsets.child(clock)
                assert offset is not None
                secs = offset.integer("secs", default=0, minimum=-(2**62)) or 0
                nanosecs = offset.integer("nanosecs", default=0) or 0
                self.time_offsets[clock] = (secs, nanosecs)

    def namespace(self, kind: str) -> Namespace | None:
        for namespace in self.namespaces:
            if namespace.type == kind:
                return namespace
        return None


class Hooks:
    __slots__ = ("by_kind",)

    def __init__(self, obj: _Object | None) -> None:
        self.by_kind: dict[str, list[Hook]] = {}
        if obj is not None:
            for kind in HOOK_KINDS:
                self.by_kind[kind] = [Hook(item) for item in obj.objects(kind)]

    def __getitem__(self, kind: str) -> list[Hook]:
        return self.by_kind.get(kind, [])


class Spec:
    """A checked config.json. `raw` keeps the document as read."""

    __slots__ = (
        "annotations",
        "domainname",
        "hooks",
        "hostname",
        "linux",
        "mounts",
        "oci_version",
        "process",
        "raw",
        "root",
    )

    def __init__(self, raw: object) -> None:
        obj = _Object(raw, "")
        self.raw = obj.raw
        self.oci_version = obj.string("ociVersion", required=True)
        process = obj.child("process")
        self.process = None if process is None else Process(process)
        root = obj.child("root", required=True)
        assert root is not None
        self.root = Root(root)
        self.hostname = obj.string("hostname")
        self.domainname = obj.string("domainname")
        self.mounts = [Mount(item) for item in obj.objects("mounts")]
        self.hooks = Hooks(obj.child("hooks"))
        self.annotations = obj.string_map("annotations")
        linux = obj.child("linux")
        self.linux = Linux(linux if linux is not None else _Object({}, "linux"))
        self._check_namespaces()

    def _check_namespaces(self) -> None:
        linux = self.linux
        if linux.namespace("mount") is None:
            raise SpecError("linux.namespaces", "a mount namespace is required")
        user = linux.namespace("user")
        if user is not None and not user.path:
            if not linux.uid_mappings or not linux.gid_mappings:
                raise SpecError(
                    "linux", "uidMappings and gidMappings are required with a new user namespace"
                )
        elif linux.uid_mappings or linux.gid_mappings:
            raise SpecError("linux", "uidMappings and gidMappings need a new user namespace")
        uts = linux.namespace("uts")
        if (self.hostname or self.domainname) and (uts is None or uts.path):
            raise SpecError("", "hostname and domainname need a new uts namespace")
        if linux.time_offsets:
            time = linux.namespace("time")
            if time is None or time.path:
                raise SpecError("linux.timeOffsets", "a new time namespace is required")
        for key in linux.sysctl:
            if "/" in key or ".." in key.split("."):
                raise SpecError("linux.sysctl", f"invalid name {key!r}")
            namespace = _sysctl_namespace(key)
            if namespace is None:
                raise SpecError(
                    "linux.sysctl", f"{key} is not namespaced: it would change the host"
                )
            own = linux.namespace(namespace)
            if own is None or (own.path and namespace != "network"):
                raise SpecError(
                    "linux.sysctl", f"{key} needs a new {namespace} namespace for the container"
                )


# The sysctls the kernel keeps per namespace: (prefix or name, namespace type).
_NAMESPACED_SYSCTLS = (
    ("kernel.msgmax", "ipc"),
    ("kernel.msgmnb", "ipc"),
    ("kernel.msgmni", "ipc"),
    ("kernel.sem", "ipc"),
    ("kernel.shmall", "ipc"),
    ("kernel.shmmax", "ipc"),
    ("kernel.shmmni", "ipc"),
    ("kernel.shm_rmid_forced", "ipc"),
    ("fs.mqueue.", "ipc"),
    ("net.", "network"),
    ("kernel.hostname", "uts"),
    ("kernel.domainname", "uts"),
)


def _sysctl_namespace(key: str) -> str | None:
    for name, namespace in _NAMESPACED_SYSCTLS:
        if key == name or (name.endswith(".") and key.startswith(name)):
            return namespace
    return None


def parse_process(raw: object, where: str = "process") -> Process:
    """A runtime-spec process object on its own (as `exec --process` reads it)."""
    return Process(_Object(raw, where))


def parse_spec(text: str | bytes) -> Spec:
    """Parse config.json text into a checked Spec; SpecError names the problem."""
    from inclavare import lightjson

    try:
        raw = lightjson.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise SpecError("", f"invalid JSON: {error}") from None
    return Spec(raw)


def load_spec(bundle: str) -> Spec:
    """Read and check BUNDLE/config.json."""
    path = f"{bundle}/config.json"
    try:
        with open(path, "rb") as config_file:
            text = config_file.read()
    except FileNotFoundError:
        raise InclavareError(f"config.json not found in bundle {bundle}") from None
    except OSError as error:
        raise InclavareError(f"cannot read {path}: {error.strerror}") from None
    return parse_spec(text)
