"""The Helm chart deploy/helm/inclavare-containers, rendered by tests/unit/k8s/helm_render.py
(a renderer of the documented subset of Go-template syntax the chart keeps to; no helm binary
exists here): with its default values it produces the objects of deploy/kubernetes (less the
Namespace, which `helm install --create-namespace` makes), each variant is valid for the two
latest Kubernetes minor versions, and syntax outside the subset is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("yaml", reason="PyYAML is not installed: the Helm chart is NOT rendered")

from tests.unit.k8s.helm_render import Renderer, TemplateError, render_chart
from tests.unit.k8s.manifests import (
    REPO,
    latest_minors,
    load_documents,
    manifest_objects,
    validate,
    validator,
)

CHART = REPO / "deploy" / "helm" / "inclavare-containers"
NAMESPACE = "inclavare-system"


def rendered_objects(values: dict[str, Any] | None = None) -> dict[tuple[str, str], Any]:
    objects: dict[tuple[str, str], Any] = {}
    for name, text in render_chart(CHART, values, NAMESPACE).items():
        for document in load_documents(text):
            key = (document["kind"], document["metadata"]["name"])
            assert key not in objects, f"{name}: {key} twice"
            objects[key] = document
    return objects


def static(*leave_out: str) -> dict[tuple[str, str], Any]:
    """The objects of deploy/kubernetes but the Namespace and the DaemonSets named."""
    return {
        key: value
        for key, value in manifest_objects().items()
        if key[0] != "Namespace" and key not in {("DaemonSet", name) for name in leave_out}
    }


def test_default_values_give_the_objects_of_deploy_kubernetes() -> None:
    rendered = rendered_objects({"examplePod": {"enabled": True}})
    assert rendered == static("inclavare-node-uninstaller")


def test_uninstall_replaces_the_installer_with_the_uninstaller() -> None:
    rendered = rendered_objects({"uninstall": True, "examplePod": {"enabled": True}})
    assert rendered == static("inclavare-node-installer")


VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "uninstall": {"uninstall": True},
    "sgx": {
        "devicePlugin": {"enclaveType": "sgx", "resourceName": "sgx.intel.com/epc"},
        "examplePod": {"enabled": True, "epcMiB": 32},
    },
    "custom": {
        "image": {"repository": "registry.example/inclavare", "tag": "1.2.3"},
        "installer": {"nodeSelector": {"confidential": "yes"}, "tolerations": []},
        "devicePlugin": {"epcMiB": 65536, "unitMiB": 4},
        # Helm merges maps with the defaults; null removes a default key.
        "runtimeClass": {"nodeSelector": {"pool": "tee", "inclavare.io/rune": None}},
    },
    "no-plugin": {"devicePlugin": {"enabled": False}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_objects_are_valid(variant: str) -> None:
    validator()
    objects = rendered_objects(VARIANTS[variant])
    assert objects
    for minor in latest_minors():
        for document in objects.values():
            validate(document, minor)


def test_values_reach_the_objects() -> None:
    sgx = rendered_objects(VARIANTS["sgx"])
    plugin = sgx[("DaemonSet", "inclavare-device-plugin")]["spec"]["template"]["spec"]
    container = plugin["containers"][0]
    assert container["command"] == [
        "inclavare-device-plugin",
        "--unit-mib=1",
        "--resource-name=sgx.intel.com/epc",
    ]
    assert container["securityContext"] == {"privileged": True}
    limits = sgx[("Pod", "confidential-hello")]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["sgx.intel.com/epc"] == "32"
    custom = rendered_objects(VARIANTS["custom"])
    installer = custom[("DaemonSet", "inclavare-node-installer")]["spec"]["template"]["spec"]
    assert installer["nodeSelector"] == {"confidential": "yes"}
    assert installer["tolerations"] == []
    assert installer["initContainers"][0]["image"] == "registry.example/inclavare:1.2.3"
    runtime_class = custom[("RuntimeClass", "rune")]
    plugin = custom[("DaemonSet", "inclavare-device-plugin")]["spec"]["template"]["spec"]
    assert runtime_class["scheduling"]["nodeSelector"] == plugin["nodeSelector"] == {"pool": "tee"}
    assert "--unit-mib=4" in plugin["containers"][0]["command"]
    assert ("DaemonSet", "inclavare-device-plugin") not in rendered_objects(VARIANTS["no-plugin"])


def render(template: str, values: dict[str, Any] | None = None) -> str:
    context = {"Values": values or {}, "Release": {"Namespace": "ns"}, "Chart": {}}
    return Renderer(context, "t.yaml").render(template)


def test_renderer_subset() -> None:
    values = {"a": {"b": "x"}, "on": True, "off": False, "map": {"k": "v", "j": 1}}
    assert render("n: {{ .Values.a.b }}\n", values) == "n: x\n"
    assert render("n: {{ .Values.a.b | quote }}", values) == 'n: "x"'
    assert render('n: {{ .Values.none | default "d" }}', values) == "n: d"
    assert render("m: {{- toYaml .Values.map | nindent 2 }}\n", values) == "m:\n  j: 1\n  k: v\n"
    text = "a:\n{{- if .Values.on }}\n  on\n{{- else }}\n  off\n{{- end }}\n"
    assert render(text, values) == "a:\n  on\n"
    assert render(text.replace(".on", ".off"), values) == "a:\n  off\n"
    assert render('{{ if eq .Values.a.b "x" }}yes{{ end }}', values) == "yes"
    assert render("{{ if not .Values.on }}yes{{ end }}", values) == ""
    assert render("{{/* note */}}{{ .Release.Namespace }}") == "ns"


@pytest.mark.parametrize(
    "template",
    [
        "{{ range .Values.x }}{{ end }}",
        '{{ include "x" . }}',
        "{{ $x := 1 }}",
        "{{ .Values.x | upper }}",
        "{{ .Capabilities.KubeVersion }}",
        "{{ if .Values.x }}",
        "{{ end }}",
        '{{ printf "%s" .Values.x }}',
    ],
)
def test_renderer_refuses_what_it_does_not_understand(template: str) -> None:
    with pytest.raises(TemplateError, match=r"^t\.yaml: "):
        render(template)


def test_every_template_is_rendered() -> None:
    names = {path.name for path in (CHART / "templates").iterdir()}
    assert names == set(render_chart(CHART, namespace=NAMESPACE)), "a template was skipped"


def test_chart_readme_says_what_the_tests_prove() -> None:
    readme = (CHART / "README.md").read_text()
    assert "subset" in readme and "helm_render.py" in readme


def test_chart_metadata() -> None:
    metadata = load_documents((CHART / "Chart.yaml").read_text())[0]
    assert metadata["apiVersion"] == "v2" and metadata["name"] == CHART.name
    assert Path(CHART / "values.yaml").exists()
