"""Labelling the node the installer runs on, through the Kubernetes API with the pod's service
account: a JSON merge patch of the node's metadata.labels (null removes a label). The label is
what the `rune` RuntimeClass schedules on, so it is set only once the node is ready and
removed first when it is taken apart."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request

from inclavare.errors import InclavareError

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class LabelError(InclavareError):
    """The node's labels cannot be changed."""


def label_patch(labels: dict[str, str | None]) -> bytes:
    return json.dumps({"metadata": {"labels": labels}}, sort_keys=True).encode()


def in_cluster_server() -> str:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise LabelError("not in a pod: KUBERNETES_SERVICE_HOST is not set (give --api-server)")
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{port}"


def label_node(
    node: str,
    labels: dict[str, str | None],
    server: str | None = None,
    credentials: str = SERVICE_ACCOUNT,
    timeout: float = 30,
) -> None:
    base = server or in_cluster_server()
    url = f"{base.rstrip('/')}/api/v1/nodes/{urllib.parse.quote(node, safe='')}"
    headers = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
    token_file = os.path.join(credentials, "token")
    if os.path.exists(token_file):
        with open(token_file) as token:
            headers["Authorization"] = f"Bearer {token.read().strip()}"
    context = None
    if url.startswith("https:"):
        ca_file = os.path.join(credentials, "ca.crt")
        context = ssl.create_default_context(cafile=ca_file if os.path.exists(ca_file) else None)
    request = urllib.request.Request(url, label_patch(labels), headers, method="PATCH")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            response.read()
    except urllib.error.HTTPError as error:
        detail = error.read(2000).decode(errors="replace")
        try:
            detail = json.loads(detail).get("message", detail)
        except (ValueError, AttributeError):
            pass
        raise LabelError(
            f"labelling node {node} failed: HTTP {error.code}: {' '.join(str(detail).split())}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise LabelError(f"labelling node {node} failed: {reason}") from None
