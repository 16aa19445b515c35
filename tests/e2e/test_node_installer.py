"""inclavare-node-installer on real containerd configuration files (`containerd config
default` of the installed containerd), checked by the real containerd: `config dump`, and a
private containerd whose CRI plugin reports the rune runtime; the node configuration snippets
of deploy/ checked by containerd, dockerd and podman."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import Any

import grpc
import pytest

from inclavare.k8s.installer import RUNE_PATH, RUNTIME_TYPE, SHIM_PATH
from tests.e2e.conftest import DOCKER_CLIENT
from tests.e2e.daemons import stop_daemon, wait_for_socket
from tests.integration.conftest import rune_path

pytestmark = pytest.mark.daemon

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CRI_V2 = "io.containerd.grpc.v1.cri"


@pytest.fixture(scope="module", autouse=True)
def _containerd() -> None:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed: run `make install`")


def installer_program() -> str:
    program = os.path.join(os.path.dirname(rune_path()), "inclavare-node-installer")
    if not os.access(program, os.X_OK):
        pytest.skip(f"inclavare-node-installer is not installed at {program}")
    return program


def installer(*args: str) -> subprocess.CompletedProcess[str]:
    # Never the default restart command: it would restart the machine's own containerd.
    assert any(arg in args for arg in ("--no-restart", "--dry-run", "--restart-command")), args
    return subprocess.run([installer_program(), *args], capture_output=True, text=True, timeout=120)


def private_default_config(directory: Path) -> str:
    """containerd's own default configuration, with its root, state and sockets moved into
    `directory` (the operator's settings the installer must keep)."""
    text = subprocess.run(
        ["containerd", "config", "default"], capture_output=True, text=True, check=True
    ).stdout
    replacements = {
        '"/var/lib/containerd"': f'"{directory}/root"',
        '"/run/containerd"': f'"{directory}/state"',
        '"/run/containerd/containerd.sock"': f'"{directory}/containerd.sock"',
        '"/opt/containerd"': f'"{directory}/opt"',
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def dump(config: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["containerd", "--config", str(config), "config", "dump"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)


def copy_program(program: str, root: Path) -> None:
    """`program` and the shared libraries it loads, at their paths under `root` (what a
    node's / has, for the installer to run it with chroot)."""
    libraries = subprocess.run(["ldd", program], capture_output=True, text=True, check=True)
    paths = [program]
    for line in libraries.stdout.splitlines():
        words = [word for word in line.split() if word.startswith("/")]
        paths += words[:1]
    for path in paths:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(os.path.realpath(path), target)
        except OSError:
            shutil.copy2(path, target)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A node's / as the installer's container sees it: containerd (which the installer runs
    there to check the configuration) and its config."""
    root = tmp_path / "host"
    copy_program(shutil.which("containerd") or "/usr/bin/containerd", root)
    (root / "etc" / "containerd").mkdir(parents=True)
    (root / "etc" / "containerd" / "config.toml").write_text(private_default_config(tmp_path))
    return root


def _varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, index


def cri_status_info(socket: Path) -> dict[str, str]:
    """The `info` map of the CRI RuntimeService's Status with verbose set (runtime.v1:
    StatusRequest.verbose = 1; StatusResponse.info = 2, a map<string, string>)."""
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        status = channel.unary_unary("/runtime.v1.RuntimeService/Status")
        response: bytes = status(b"\x08\x01", timeout=30, wait_for_ready=True)
    info: dict[str, str] = {}
    index = 0
    while index < len(response):
        tag, index = _varint(response, index)
        length, index = _varint(response, index)
        body = response[index : index + length]
        index += length
        if tag >> 3 != 2:
            continue
        entry: dict[int, str] = {}
        inner = 0
        while inner < len(body):
            key, inner = _varint(body, inner)
            size, inner = _varint(body, inner)
            entry[key >> 3] = body[inner : inner + size].decode()
            inner += size
        info[entry[1]] = entry.get(2, "")
    return info


def test_install_on_containerd_default_config_is_seen_by_the_cri_plugin(
    host: Path, tmp_path: Path
) -> None:
    config = host / "etc" / "containerd" / "config.toml"
    original = config.read_text()
    first = installer("install", "--host-root", str(host), "--no-restart")
    assert first.returncode == 0, first.stderr
    installed = config.read_text()
    second = installer("install", "--host-root", str(host), "--no-restart")
    assert second.returncode == 0 and "config.toml: unchanged" in second.stdout
    assert config.read_text() == installed
    backups = list(config.parent.glob("config.toml.inclavare-*.bak"))
    assert [backup.read_text() for backup in backups] == [original]
    assert (host / "var" / "lib" / "inclavare" / "sim").stat().st_mode & 0o777 == 0o700

    dumped = dump(config)
    runtimes = dumped["plugins"][CRI_V2]["containerd"]["runtimes"]
    assert runtimes["rune"]["runtime_type"] == RUNTIME_TYPE
    assert runtimes["rune"]["runtime_path"] == SHIM_PATH
    assert runtimes["runc"]["runtime_type"] == "io.containerd.runc.v2"  # kept
    assert dumped["root"] == f"{tmp_path}/root"

    log = tmp_path / "containerd.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            ["containerd", "--config", str(config)], stdout=sink, stderr=sink
        )
    try:
        socket = tmp_path / "containerd.sock"
        wait_for_socket(socket, process, log)
        cri = json.loads(cri_status_info(socket)["config"])
        rune = cri["containerd"]["runtimes"]["rune"]
        assert rune["runtimeType"] == RUNTIME_TYPE
        assert rune["runtimePath"] == SHIM_PATH
        assert rune["PodAnnotations"] == rune["ContainerAnnotations"] == ["enclave.*"]
        assert cri["containerd"]["runtimes"]["runc"]["runtimeType"] == "io.containerd.runc.v2"
    finally:
        stop_daemon(process, tmp_path)

    removed = installer("uninstall", "--host-root", str(host), "--no-restart")
    assert removed.returncode == 0, removed.stderr
    assert config.read_text() == original
    assert "rune" not in dump(config)["plugins"][CRI_V2]["containerd"]["runtimes"]
    again = installer("uninstall", "--host-root", str(host), "--no-restart")
    assert again.returncode == 0 and "config.toml: unchanged" in again.stdout


def test_dry_run_changes_nothing(host: Path) -> None:
    config = host / "etc" / "containerd" / "config.toml"
    original = config.read_text()
    result = installer("install", "--host-root", str(host), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would be written as:" in result.stdout and "runtimes.rune]" in result.stdout
    assert config.read_text() == original
    assert sorted(path.name for path in config.parent.iterdir()) == ["config.toml"]
    assert not (host / "var").exists()


def test_node_without_containerd_is_refused(tmp_path: Path) -> None:
    result = installer("install", "--host-root", str(tmp_path), "--no-restart")
    assert result.returncode == 2
    assert result.stderr == (
        "inclavare-node-installer install: no containerd on this node: neither "
        f"/etc/containerd/config.toml nor a containerd program under {tmp_path} (looked in "
        "/usr/bin, /usr/local/bin, /bin)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_config_the_nodes_containerd_refuses_is_not_written(host: Path) -> None:
    """Valid TOML that containerd cannot read (a setting of the wrong type): the node's
    containerd, run in the node's root, is asked before anything is written."""
    config = host / "etc" / "containerd" / "config.toml"
    config.write_text('version = 2\noom_score = "high"\n')
    before = config.read_text()
    result = installer("install", "--host-root", str(host), "--no-restart")
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.startswith(
        "inclavare-node-installer install: the node's containerd refuses "
        "/etc/containerd/config.toml with the change: "
    )
    assert message.endswith("Can't convert high(string) to int")
    assert len(result.stderr.splitlines()) == 1
    assert config.read_text() == before
    assert sorted(path.name for path in config.parent.iterdir()) == ["config.toml"]


def test_foreign_rune_runtime_is_refused_and_left_alone(host: Path) -> None:
    config = host / "etc" / "containerd" / "config.toml"
    config.write_text(
        config.read_text()
        + f'\n[plugins."{CRI_V2}".containerd.runtimes.rune]\n  runtime_type = "x"\n'
    )
    before = config.read_text()
    result = installer("install", "--host-root", str(host), "--no-restart")
    assert result.returncode == 2
    assert "already defines a runtime named rune" in result.stderr
    assert config.read_text() == before
    assert len(result.stderr.splitlines()) == 1


def test_missing_config_gets_the_format_of_the_nodes_containerd(tmp_path: Path) -> None:
    """containerd 2.x on the node (a stand-in program answering --version, run in the
    node's root with chroot, as the installer does): a new config in format version 3."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("busybox-static is not installed")
    root = tmp_path / "host"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "sh")
    program = root / "usr" / "local" / "bin" / "containerd"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\necho containerd containerd.io v2.0.4 1a43cb6a\n")
    program.chmod(0o755)
    result = installer("install", "--host-root", str(root), "--no-restart")
    assert result.returncode == 0, result.stderr
    written = tomllib.loads((root / "etc" / "containerd" / "config.toml").read_text())
    assert written["version"] == 3
    runtime = written["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
    assert runtime["rune"]["runtime_type"] == RUNTIME_TYPE


def test_payload_is_copied_and_linked_then_removed(host: Path, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    (payload / "bin").mkdir(parents=True)
    for name in ("rune", "containerd-shim-rune-v2", "inclavare-device-plugin"):
        (payload / "bin" / name).write_text(f"#!/bin/sh\necho {name}\n")
        (payload / "bin" / name).chmod(0o755)
    (payload / "src").mkdir()
    (payload / "src" / "module.py").write_text("x = 1\n")
    args = ["--host-root", str(host), "--payload", str(payload), "--no-restart"]
    assert installer("install", *args).returncode == 0
    second = installer("install", *args)
    assert second.returncode == 0 and "/opt/inclavare: unchanged" in second.stdout
    link = host / "usr" / "local" / "bin" / "rune"
    assert os.readlink(link) == "/opt/inclavare/bin/rune"
    assert (host / "opt" / "inclavare" / "src" / "module.py").read_text() == "x = 1\n"
    (payload / "src" / "module.py").write_text("x = 2\n")  # a new version of the image
    assert installer("install", *args).returncode == 0
    assert (host / "opt" / "inclavare" / "src" / "module.py").read_text() == "x = 2\n"
    removed = installer("uninstall", "--host-root", str(host), "--no-restart")
    assert removed.returncode == 0, removed.stderr
    assert not link.is_symlink() and not (host / "opt" / "inclavare").exists()


def test_payload_over_a_python_the_node_lacks_is_refused(host: Path, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    (payload / "bin").mkdir(parents=True)
    (payload / "venv" / "bin").mkdir(parents=True)
    (payload / "venv" / "bin" / "python").symlink_to("/usr/bin/python3.11")
    config = host / "etc" / "containerd" / "config.toml"
    before = config.read_text()
    result = installer(
        "install", "--host-root", str(host), "--payload", str(payload), "--no-restart"
    )
    assert result.returncode == 2
    assert result.stderr == (
        "inclavare-node-installer install: the programs need /usr/bin/python3.11 (the Python "
        "of the installer's image) and this node has none: install that Python version on the "
        "node first\n"
    )
    assert config.read_text() == before and not (host / "opt").exists()
    (host / "usr" / "bin" / "python3.11").write_text("")
    assert (
        installer(
            "install", "--host-root", str(host), "--payload", str(payload), "--no-restart"
        ).returncode
        == 0
    )


def test_foreign_program_in_usr_local_bin_is_refused(host: Path, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    (payload / "bin").mkdir(parents=True)
    (payload / "bin" / "rune").write_text("#!/bin/sh\n")
    (host / "usr" / "local" / "bin").mkdir(parents=True)
    (host / "usr" / "local" / "bin" / "rune").write_text("the operator's own rune\n")
    result = installer(
        "install", "--host-root", str(host), "--payload", str(payload), "--no-restart"
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "/usr/local/bin/rune exists and is not the installer's: remove it first"
    )


def test_failed_restart_puts_the_old_config_back(host: Path) -> None:
    config = host / "etc" / "containerd" / "config.toml"
    original = config.read_text()
    result = installer("install", "--host-root", str(host), "--restart-command", "sh -c 'exit 3'")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "inclavare-node-installer install: containerd did not restart with the new "
        "/etc/containerd/config.toml; the previous configuration was put back"
    )
    assert config.read_text() == original
    ok = installer("install", "--host-root", str(host), "--restart-command", "true")
    assert ok.returncode == 0 and "containerd restarted" in ok.stdout


# --- deploy/: the node configuration snippets --------------------------------------------


def test_containerd_snippet_is_accepted_by_containerd() -> None:
    runtimes = dump(DEPLOY / "containerd" / "config.toml")["plugins"][CRI_V2]["containerd"][
        "runtimes"
    ]
    assert runtimes["rune"]["runtime_type"] == RUNTIME_TYPE
    # containerd 2.x's format: checked as TOML only (this host runs containerd 1.x).
    v3 = tomllib.loads((DEPLOY / "containerd" / "config-v3.toml").read_text())
    assert v3["version"] == 3


def test_docker_snippet_is_accepted_by_dockerd(tmp_path: Path) -> None:
    if shutil.which("dockerd") is None or not os.access(DOCKER_CLIENT, os.X_OK):
        pytest.skip("docker.io is not installed: run `make install`")
    snippet = json.loads((DEPLOY / "docker" / "daemon.json").read_text())
    assert snippet == {"runtimes": {"rune": {"path": RUNE_PATH}}}
    directory = tmp_path / "d"
    directory.mkdir()
    log = directory / "dockerd.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [
                "dockerd",
                "--config-file",
                str(DEPLOY / "docker" / "daemon.json"),
                "--data-root",
                f"{directory}/data",
                "--exec-root",
                f"{directory}/exec",
                "--pidfile",
                f"{directory}/docker.pid",
                "--host",
                f"unix://{directory}/docker.sock",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
                "--containerd-namespace",
                "rune-snippet",
                "--containerd-plugins-namespace",
                "rune-snippet-plugins",
            ],
            stdout=sink,
            stderr=sink,
        )
    try:
        wait_for_socket(directory / "docker.sock", process, log)
        info = subprocess.run(
            [
                DOCKER_CLIENT,
                "-H",
                f"unix://{directory}/docker.sock",
                "info",
                "--format",
                "{{json .Runtimes}}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(info.stdout)["rune"]["path"] == RUNE_PATH
    finally:
        stop_daemon(process, directory)


def test_podman_snippet_is_read_by_podman() -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: run `make install`")
    tmp_path = Path(tempfile.mkdtemp(prefix="pm-"))  # podman wants a short runroot
    try:
        _podman_info(tmp_path)
    finally:
        subprocess.run(["umount", "-R", "-l", str(tmp_path)], capture_output=True, check=False)
        shutil.rmtree(tmp_path)


def _podman_info(tmp_path: Path) -> None:
    text = (DEPLOY / "podman" / "containers.conf").read_text()
    assert tomllib.loads(text) == {"engine": {"runtimes": {"rune": [RUNE_PATH]}}}
    # The same file with the path of the rune under test (podman checks that it exists).
    conf = tmp_path / "containers.conf"
    conf.write_text(text.replace(RUNE_PATH, rune_path()))
    result = subprocess.run(
        [
            "podman",
            "--root",
            f"{tmp_path}/root",
            "--runroot",
            f"{tmp_path}/run",
            "--tmpdir",
            f"{tmp_path}/tmp",
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--runtime",
            "rune",
            "info",
            "--format",
            "{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Path}}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, CONTAINERS_CONF=str(conf)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["rune", rune_path()]


class ApiServer:
    """A loopback stand-in for the Kubernetes API's node PATCH: records each request and
    answers with `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.command, self.path, dict(self.headers), body))
                answer = (
                    b"{}"
                    if outer.status == 200
                    else b'{"kind":"Status","message":"nodes \\"n1\\" is forbidden"}'
                )
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_node_is_labelled_after_install_and_unlabelled_before_uninstall(
    host: Path, tmp_path: Path
) -> None:
    credentials = tmp_path / "sa"
    credentials.mkdir()
    (credentials / "token").write_text("secret-token\n")
    api = ApiServer()
    try:
        common = ["--host-root", str(host), "--no-restart", "--node-name", "n1"]
        common += ["--api-server", api.url, "--credentials", str(credentials)]
        result = installer("install", *common)
        assert result.returncode == 0, result.stderr
        assert "node n1: label inclavare.io/rune=true" in result.stdout
        removed = installer("uninstall", *common)
        assert removed.returncode == 0, removed.stderr
        assert [(method, path) for method, path, _, _ in api.requests] == [
            ("PATCH", "/api/v1/nodes/n1"),
            ("PATCH", "/api/v1/nodes/n1"),
        ]
        headers = api.requests[0][2]
        assert headers["Authorization"] == "Bearer secret-token"
        assert headers["Content-Type"] == "application/merge-patch+json"
        bodies = [json.loads(body) for _, _, _, body in api.requests]
        assert bodies == [
            {"metadata": {"labels": {"inclavare.io/rune": "true"}}},
            {"metadata": {"labels": {"inclavare.io/rune": None}}},
        ]
        api.status = 403
        refused = installer("install", *common)
        assert refused.returncode == 2
        assert refused.stderr == (
            "inclavare-node-installer install: labelling node n1 failed: HTTP 403: "
            'nodes "n1" is forbidden\n'
        )
    finally:
        api.close()
