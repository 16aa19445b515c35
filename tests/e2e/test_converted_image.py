"""A sim enclave image written by `enclave-sign convert-image`, imported into containerd 1.6
(`ctr images import`) and run with rune: it launches as a signed enclave, and a tampered
copy is refused at create, the reason reaching ctr."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemons import Containerd, start_containerd
from tests.e2e.images import build_converted_archive

pytestmark = pytest.mark.daemon
BASE_NAME = "localhost/converted"


@pytest.fixture(scope="module")
def converted_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_converted_archive(tmp_path_factory.mktemp("converted"))


@pytest.fixture(scope="module")
def containerd_sim(
    tmp_path_factory: pytest.TempPathFactory, converted_archive: Path
) -> Iterator[Containerd]:
    """A private containerd whose shims and rune use a private sim platform."""
    import shutil

    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed: run `make install`")
    directory = tmp_path_factory.mktemp("containerd-sim")
    previous = os.environ.get("INCLAVARE_SIM_DIR")
    os.environ["INCLAVARE_SIM_DIR"] = str(directory / "sim")  # inherited by the daemon
    try:
        daemon = start_containerd(directory)
    finally:
        if previous is None:
            del os.environ["INCLAVARE_SIM_DIR"]
        else:
            os.environ["INCLAVARE_SIM_DIR"] = previous
    try:
        daemon.ctr("images", "import", "--base-name", BASE_NAME, str(converted_archive))
        yield daemon
        daemon.remove_everything()
    finally:
        daemon.stop()


def test_containerd_runs_the_converted_image_as_an_enclave(
    containerd_sim: Containerd, rune_program: str
) -> None:
    result = containerd_sim.ctr(
        "run",
        "--rm",
        "--runc-binary",
        rune_program,
        f"{BASE_NAME}:enclave",
        "converted",
        "sh",
        "-c",
        "env; exit 3",
        check=False,
    )
    assert result.returncode == 3, result.stderr
    # the image's Env sets ENCLAVE_TYPE; rune takes it out of an enclave's environment
    assert "PATH=" in result.stdout and "ENCLAVE_" not in result.stdout


def test_containerd_reports_the_refused_launch_of_a_tampered_image(
    containerd_sim: Containerd, rune_program: str
) -> None:
    result = containerd_sim.ctr(
        "run",
        "--rm",
        "--runc-binary",
        rune_program,
        f"{BASE_NAME}:tampered",
        "tampered",
        "true",
        check=False,
    )
    assert result.returncode != 0
    assert "enclave launch refused: trusted file /etc/passwd differs" in result.stderr
    assert "tampered" not in containerd_sim.ctr("containers", "ls", "-q").stdout.split()
