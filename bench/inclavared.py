"""Benchmark: inclavared's forwarding and attested sessions against talking to the enclave
service directly, in the same run.

The enclave service image is built once and run by rune as a sim enclave container (the
service listens on a unix socket bind-mounted from the host); inclavared runs as a process
of its own, connected to it. Then, over loopback:

- throughput of application data after `connect`: the same client echoes N MiB in 64 KiB
  writes through inclavared (two Enclave-TLS legs, a daemon in the middle) and over a direct
  mutual Enclave-TLS session to the service; runs alternate, medians are compared
  (ratio through / direct, target >= 0.7), with the CPU seconds each process spent per
  run (inclavared decrypts and re-encrypts every byte on two legs: about twice an
  endpoint's work);
- the same through inclavared's tunnel: end-to-end Enclave-TLS between the client and the
  service, inclavared copying ciphertext (ratio tunnel / direct);
- attested sessions per second: whole `remote_attest` sessions through inclavared (a
  handshake with inclavared, which opens a mutual one with the enclave, get-evidence, both
  parties' evidence verified by the client), sequential and with C concurrent clients,
  against direct mutual Enclave-TLS handshakes with the service (the peer), and direct
  handshakes followed by a verified get-evidence.

Client, daemon and enclave share the machine's cores: through inclavared there is one more
process and one more TLS leg per byte. Needs root, rune and busybox-static.

    python bench/inclavared.py [--runs N] [--megabytes N] [--sessions N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
sys.path.insert(0, str(REPO_ROOT))

from tests.integration.eaa_support import (  # noqa: E402
    InclavaredProcess,
    ServiceEnclave,
    copy_rootfs,
)

from inclavare.eaa import protocol, service_image  # noqa: E402
from inclavare.eaa.address import Address, open_session, parse_address  # noqa: E402
from inclavare.eaa.evidence import check_party  # noqa: E402
from inclavare.eaa.remote import open_tunnel, remote_attest  # noqa: E402
from inclavare.tls.config import Config  # noqa: E402
from inclavare.tls.endpoint import EnclaveTls  # noqa: E402

WRITE_SIZE = 64 * 1024
CONTAINER_ID = "bench-eaa"


class Rune:
    """rune with a private --root; `detached` as ServiceEnclave.start expects it."""

    def __init__(self, program: str, root: Path) -> None:
        self.program = program
        self.root = root

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.program, "--root", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"rune {' '.join(args)}: {result.stderr.strip()}")
        return result

    def detached(self, *args: str, output: Path, check: bool = True) -> None:
        # The container keeps rune's standard streams: files, never pipes.
        errors = output.with_name(output.name + ".err")
        with open(output, "ab") as sink, open(errors, "wb") as error_sink:
            result = subprocess.run(
                [self.program, "--root", str(self.root), *args],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=error_sink,
                timeout=60,
                check=False,
            )
        if check and result.returncode != 0:
            raise RuntimeError(f"rune {' '.join(args)}: {errors.read_text().strip()}")


async def echo_through(
    tls: EnclaveTls, address: Address, total: int, tunnel: bool = False
) -> float:
    """Seconds to echo `total` bytes after `connect` (writer and reader run concurrently);
    `tunnel`: the session goes end to end through inclavared's tunnel listener."""
    if tunnel:
        session = await open_tunnel(address, tls)
    else:
        session = await open_session(tls, address)
    try:
        reader = protocol.FrameReader()
        session.write(protocol.encode(protocol.message("connect")))
        await session.drain()
        answer = None
        while answer is None:
            data = await session.read()
            if not data:
                raise RuntimeError("the session ended before `connected`")
            for answer in reader.feed(data):  # noqa: B007
                break
        if answer.type != "connected":
            raise RuntimeError(f"answered {answer.type} to connect")
        first = reader.take_rest()
        chunk = os.urandom(WRITE_SIZE)
        started = time.perf_counter()

        async def send() -> None:
            for _ in range(total // WRITE_SIZE):
                session.write(chunk)
                await session.drain()

        sender = asyncio.create_task(send())
        received = len(first)
        while received < total:
            data = await session.read()
            if not data:
                raise RuntimeError(f"the echo ended after {received} of {total} bytes")
            received += len(data)
        await sender
        return time.perf_counter() - started
    finally:
        await session.close()


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of these processes and their descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = list(pids)
    while pending:
        pid = pending.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def sessions_per_second(
    attempt: Callable[[], Awaitable[object]], count: int, concurrency: int
) -> float:
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await attempt()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def measure(
    args: argparse.Namespace,
    service: Address,
    daemon: Address,
    tunnel: Address,
    enclave_policy: Path,
    pids: dict[str, list[int]],
) -> int:
    from inclavare.attestation.policy import load_policy

    policy = load_policy(enclave_policy.read_bytes(), str(enclave_policy))
    sim = Config(attester="sim", allow_simulated=True, mutual=True, handshake_timeout=60)
    # Direct: a mutual client (the service wants its client attested, as inclavared is).
    direct_tls = EnclaveTls(replace(sim, policy=policy), server=False)
    # Through inclavared: shelter's side, which does not attest itself.
    shelter_tls = EnclaveTls(
        Config(attester="nullattester", allow_simulated=True, handshake_timeout=60), server=False
    )
    checker = EnclaveTls(
        Config(attester="nullattester", allow_simulated=True, policy=policy), server=False
    )

    total = args.megabytes * 1024 * 1024
    await echo_through(direct_tls, service, WRITE_SIZE * 16)  # warm both paths
    await echo_through(shelter_tls, daemon, WRITE_SIZE * 16)
    await echo_through(direct_tls, tunnel, WRITE_SIZE * 16, tunnel=True)
    names = ("direct", "inclavared", "tunnel")
    times: dict[str, list[float]] = {name: [] for name in names}
    # CPU seconds per run of each process: (client, enclave, inclavared).
    cpu: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    for index in range(args.runs):
        order = names[index % 3 :] + names[: index % 3]
        for name in order:
            before = (own_cpu_seconds(), cpu_seconds(pids["enclave"]), cpu_seconds(pids["daemon"]))
            if name == "direct":
                times[name].append(await echo_through(direct_tls, service, total))
            elif name == "tunnel":
                times[name].append(await echo_through(direct_tls, tunnel, total, tunnel=True))
            else:
                times[name].append(await echo_through(shelter_tls, daemon, total))
            after = (own_cpu_seconds(), cpu_seconds(pids["enclave"]), cpu_seconds(pids["daemon"]))
            cpu[name].append(tuple(b - a for a, b in zip(before, after, strict=True)))  # type: ignore[arg-type]
    rates = {name: total / statistics.median(values) / 2**20 for name, values in times.items()}
    ratio = rates["inclavared"] / rates["direct"]
    tunnel_ratio = rates["tunnel"] / rates["direct"]
    print(
        f"application data echoed after connect, {args.megabytes} MiB in "
        f"{WRITE_SIZE // 1024} KiB writes, {args.runs} runs each, alternating, medians"
    )
    print(f"  direct Enclave-TLS to the service  {rates['direct']:8.1f} MiB/s")
    print(f"  through inclavared                 {rates['inclavared']:8.1f} MiB/s")
    print(f"  ratio inclavared/direct            {ratio:8.2f}   (target >= 0.7)")
    print(f"  end to end through the tunnel      {rates['tunnel']:8.1f} MiB/s")
    print(f"  ratio tunnel/direct                {tunnel_ratio:8.2f}   (target >= 0.7)")
    for name in names:
        client, enclave, forwarder = (
            statistics.median(run[part] for run in cpu[name]) for part in range(3)
        )
        print(
            f"  CPU s per run, {name:<10}  client {client:.2f}  enclave {enclave:.2f}  "
            f"inclavared {forwarder:.2f}  (median wall {statistics.median(times[name]):.2f} s)"
        )

    async def handshake() -> None:
        session = await open_session(direct_tls, service)
        await session.close()

    async def direct_evidence() -> None:
        session = await open_session(direct_tls, service)
        try:
            nonce = os.urandom(32)
            session.write(protocol.encode(protocol.message("get-evidence", nonce=nonce)))
            await session.drain()
            reader = protocol.FrameReader()
            while True:
                data = await session.read()
                if not data:
                    raise RuntimeError("the service ended the session")
                answers = list(reader.feed(data))
                if answers:
                    break
            answer = answers[0]
            assert answer.type == "evidence", answer
            await asyncio.to_thread(
                check_party,
                direct_tls,
                answer.bytes_of("certificate"),
                answer.bytes_of("evidence"),
                nonce,
                "enclave",
                session.peer,
            )
        finally:
            await session.close()

    async def attested() -> None:
        await remote_attest(daemon, shelter_tls, checker, timeout=120)

    for attempt in (handshake, direct_evidence, attested):  # warm-up
        await sessions_per_second(attempt, 3, 1)
    print(f"attested sessions per second, {args.sessions} sessions each, best of 3 rounds")
    for concurrency in (1, args.concurrency):
        best: dict[str, float] = {"handshake": 0.0, "evidence": 0.0, "inclavared": 0.0}
        for _ in range(3):
            for name, attempt in (
                ("handshake", handshake),
                ("evidence", direct_evidence),
                ("inclavared", attested),
            ):
                rate = await sessions_per_second(attempt, args.sessions, concurrency)
                best[name] = max(best[name], rate)
        label = "sequential" if concurrency == 1 else f"{concurrency} concurrent clients"
        print(f"  {label}:")
        print(f"    direct mutual handshake                  {best['handshake']:7.1f} /s")
        print(f"    direct handshake + verified get-evidence {best['evidence']:7.1f} /s")
        print(
            f"    remote_attest through inclavared         {best['inclavared']:7.1f} /s"
            f"   ratio/handshake {best['inclavared'] / best['handshake']:.2f}"
            f"   ratio/handshake+evidence {best['inclavared'] / best['evidence']:.2f}"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="throughput runs of each (>= 3)")
    parser.add_argument("--megabytes", type=int, default=64, help="MiB echoed per run")
    parser.add_argument("--sessions", type=int, default=60, help="sessions per round")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rune", default=os.environ.get("RUNE") or shutil.which("rune") or "rune")
    args = parser.parse_args()
    args.runs = max(args.runs, 3)
    if os.geteuid() != 0:
        print("bench/inclavared: needs root (it runs an enclave container)", file=sys.stderr)
        return 2
    if not os.path.exists(service_image.BUSYBOX):
        print("bench/inclavared: busybox-static is not installed", file=sys.stderr)
        return 2
    # inclavared and enclave-sign run as `python -m`: they must import this tree.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")])
    )
    with tempfile.TemporaryDirectory(prefix="bench-inclavared-") as scratch:
        directory = Path(scratch)
        sim_dir = directory / "sim"
        os.environ["INCLAVARE_SIM_DIR"] = str(sim_dir)
        from inclavare.cli.enclave_sign import main as enclave_sign
        from inclavare.tee.sim.store import load_platform

        load_platform(sim_dir)  # the root CA the container is given must exist first
        image = directory / "image"
        service_image.build_rootfs(image)
        bundle = directory / "bundle"
        bundle.mkdir()
        copy_rootfs(image, bundle / "rootfs")
        key = directory / "enclave-key.pem"
        quiet = open(os.devnull, "w")  # noqa: SIM115 - enclave-sign prints what it did
        saved, sys.stdout = sys.stdout, quiet
        try:
            enclave_sign(["genkey", str(key)])
            enclave = ServiceEnclave(bundle, key, sim_dir)
            enclave.configure()
            enclave.sign()
        finally:
            sys.stdout = saved
            quiet.close()
        rune = Rune(args.rune, directory / "state")
        daemon: InclavaredProcess | None = None
        try:
            enclave.start(rune, CONTAINER_ID)
            daemon = InclavaredProcess.start(
                directory,
                "--listen",
                "tcp://127.0.0.1:0",
                "--connect",
                enclave.address,
                "--tunnel-listen",
                "tcp://127.0.0.1:0",
                "--allow-sim",
                "--attester",
                "sim",
                "--timeout",
                "60",
            )
            policy = enclave.policy(directory / "policy.json")
            state = json.loads(rune("state", CONTAINER_ID).stdout)
            pids = {"enclave": [int(state["pid"])], "daemon": [daemon.process.pid]}
            return asyncio.run(
                measure(
                    args,
                    parse_address(enclave.address),
                    parse_address(daemon.address),
                    parse_address(daemon.tunnel),
                    policy,
                    pids,
                )
            )
        finally:
            if daemon is not None and daemon.stop() != 0:
                print(f"bench/inclavared: inclavared: {daemon.text()[-2000:]}", file=sys.stderr)
            rune("delete", "--force", CONTAINER_ID, check=False)


if __name__ == "__main__":
    sys.exit(main())
