"""deploy/kubernetes: every object valid for the two latest Kubernetes versions
kubernetes-validate knows (strict: unknown fields are errors), and consistent with the
programs it runs (the handler, the node label, the resource name, the command lines)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from inclavare.cli.inclavare_device_plugin import build_parser as plugin_parser
from inclavare.cli.inclavare_node_installer import build_parser as installer_parser
from inclavare.k8s.api import DEFAULT_DIRECTORY
from inclavare.k8s.epcpool import RESOURCE_NAME
from inclavare.k8s.installer import NODE_LABEL, RUNTIME_NAME
from tests.unit.k8s.manifests import latest_minors, manifest_objects, validate, validator

OBJECTS = manifest_objects()


@pytest.mark.parametrize("key", sorted(OBJECTS), ids=lambda key: f"{key[0]}/{key[1]}")
def test_valid_for_the_latest_kubernetes_versions(key: tuple[str, str]) -> None:
    validator()
    for minor in latest_minors():
        validate(OBJECTS[key], minor)


def test_validation_catches_mistakes() -> None:
    """The validation can fail: a misspelt field and a wrong type are refused."""
    kubernetes_validate = validator()
    minor = latest_minors()[0]
    misspelt = copy.deepcopy(OBJECTS[("RuntimeClass", "rune")])
    misspelt["handlr"] = misspelt.pop("handler")
    wrong_type = copy.deepcopy(OBJECTS[("DaemonSet", "inclavare-device-plugin")])
    wrong_type["spec"]["template"]["spec"]["hostPID"] = "yes"
    for document in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(document, minor)


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = OBJECTS[(kind, name)]["spec"]["template"]["spec"]
    return spec


def test_runtime_class_and_example_pod_match_the_installer_and_the_plugin() -> None:
    runtime_class = OBJECTS[("RuntimeClass", "rune")]
    assert runtime_class["handler"] == RUNTIME_NAME
    assert runtime_class["scheduling"]["nodeSelector"] == {NODE_LABEL: "true"}
    pod = OBJECTS[("Pod", "confidential-hello")]
    assert pod["spec"]["runtimeClassName"] == runtime_class["metadata"]["name"]
    assert RESOURCE_NAME in pod["spec"]["containers"][0]["resources"]["limits"]
    plugin = pod_spec("DaemonSet", "inclavare-device-plugin")
    assert plugin["nodeSelector"] == {NODE_LABEL: "true"}
    assert plugin["volumes"][0]["hostPath"]["path"] == DEFAULT_DIRECTORY
    assert plugin["containers"][0]["volumeMounts"][0]["mountPath"] == DEFAULT_DIRECTORY


def test_command_lines_are_accepted_by_the_programs() -> None:
    command = pod_spec("DaemonSet", "inclavare-device-plugin")["containers"][0]["command"]
    assert command[0] == "inclavare-device-plugin"
    assert plugin_parser().parse_args(command[1:]).resource_name == RESOURCE_NAME
    for name, action in (
        ("inclavare-node-installer", "install"),
        ("inclavare-node-uninstaller", "uninstall"),
    ):
        spec = pod_spec("DaemonSet", name)
        init = spec["initContainers"][0]
        assert init["command"][0] == "inclavare-node-installer"
        args = installer_parser().parse_args(init["command"][1:])
        assert (args.action, args.host_root) == (action, "/host")
        assert spec["volumes"][0]["hostPath"]["path"] == "/"
        assert spec["hostPID"] is True and init["securityContext"]["privileged"] is True
        assert init["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
