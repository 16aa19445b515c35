"""Reading Kubernetes manifests and validating them offline against the API's schemas
(kubernetes-validate ships them), for the two latest Kubernetes minor versions it knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
MANIFESTS = REPO / "deploy" / "kubernetes"


def yaml_module() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML is not installed: pip install -e '.[dev]'")


def validator() -> Any:
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install -e '.[dev]'): the manifests "
        "and the Helm chart are NOT validated against the Kubernetes API schemas",
    )


def latest_minors(count: int = 2) -> list[str]:
    from kubernetes_validate import utils

    minors: list[str] = []
    for version in reversed(utils.all_versions()):
        minor = utils.major_minor(version)
        if minor not in minors:
            minors.append(minor)
    assert len(minors) >= count, minors
    return minors[:count]


def load_documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml_module().safe_load_all(text) if document]


def manifest_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of deploy/kubernetes, by (kind, name)."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in load_documents(path.read_text()):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in objects, f"{path.name}: {key} defined twice"
            objects[key] = document
    return objects


def validate(document: dict[str, Any], minor: str) -> None:
    """Raises kubernetes_validate's ValidationError (or SchemaNotFoundError)."""
    kubernetes_validate = validator()
    kubernetes_validate.validate(document, minor, strict=True)
