"""The KubeRay example (deploy/k8s/kuberay/): the fields that keep the build inside the agency.

kubernetes-validate has no schema for the RayCluster CRD, so `.ci/deploy-check k8s` leaves
this folder out of the overlays it renders; these tests read the manifest's structure instead:
the image with the ray extra at the pinned Ray version, no secret inline, the OPRF key mounted
from a Secret on the driver alone, TLS and token authentication on every Ray process, resources,
and a cluster closed to everything but its own pods.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "deploy" / "k8s" / "kuberay"
IMAGE = "xiezhi/connector-ray"
RAY_ENV = {
    "RAY_USE_TLS": "1",
    "RAY_TLS_SERVER_CERT": "/run/ray/tls/tls.crt",
    "RAY_TLS_SERVER_KEY": "/run/ray/tls/tls.key",
    "RAY_TLS_CA_CERT": "/run/ray/tls/ca.crt",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN_PATH": "/run/ray/auth/token",
}


def _documents() -> dict[str, dict[str, Any]]:
    text = (FOLDER / "connector-build.yaml").read_text(encoding="utf-8")
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in yaml.safe_load_all(text)}


def _ray_pods() -> list[dict[str, Any]]:
    cluster = _documents()["RayCluster/connector-court-build"]["spec"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [
        group["template"]["spec"] for group in cluster["workerGroupSpecs"]
    ]


def _driver_pod() -> dict[str, Any]:
    pod: dict[str, Any] = _documents()["Job/connector-court-publish"]["spec"]["template"]["spec"]
    return pod


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def test_the_example_stays_out_of_the_rendered_overlays() -> None:
    for kustomization in (ROOT / "deploy" / "k8s").glob("*/**/kustomization.yaml"):
        assert "kuberay" not in kustomization.read_text(encoding="utf-8"), kustomization


def test_the_cluster_runs_the_connector_image_at_the_pinned_ray_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (pin,) = pyproject["project"]["optional-dependencies"]["ray"]
    version = re.fullmatch(r"ray\[client\]==(\S+)", pin)
    assert version is not None
    assert _documents()["RayCluster/connector-court-build"]["spec"]["rayVersion"] == version[1]
    images = {c["image"] for pod in [*_ray_pods(), _driver_pod()] for c in pod["containers"]}
    assert images == {IMAGE}


def test_every_ray_process_uses_tls_and_the_cluster_token() -> None:
    for pod in [*_ray_pods(), _driver_pod()]:
        for container in pod["containers"]:
            env = _env(container)
            assert {name: env.get(name) for name in RAY_ENV} == RAY_ENV, container["name"]
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/run/ray/tls"]["readOnly"] and mounts["/run/ray/auth"]["readOnly"]


def test_no_secret_is_written_in_the_manifest() -> None:
    documents = _documents()
    assert not [name for name in documents if name.startswith("Secret/")]
    for pod in [*_ray_pods(), _driver_pod()]:
        for container in pod["containers"]:
            for name, value in _env(container).items():
                if re.search(r"TOKEN|PASSWORD|SECRET|DATABASE_URL|KEY$", name) and name not in RAY_ENV:
                    assert isinstance(value, dict) and "secretKeyRef" in value, name
        for volume in pod["volumes"]:
            assert set(volume) - {"name"} <= {"secret", "emptyDir"}, volume["name"]


def test_the_key_is_mounted_from_a_secret_on_the_driver_alone() -> None:
    driver = _driver_pod()
    (container,) = driver["containers"]
    key_dir = next(arg.split("=", 1)[1] for arg in container["args"] if arg.startswith("--key-dir="))
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == key_dir]
    assert mount["readOnly"] is True
    (volume,) = [v for v in driver["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "connector-court-oprf-keys"
    assert volume["secret"]["defaultMode"] == 0o400
    # The workers get the key through the cluster's object store: no pod of the cluster mounts it.
    for pod in _ray_pods():
        assert "connector-court-oprf-keys" not in yaml.safe_dump(pod)
    assert _env(container)["XIEZHI_RAY_ADDRESS"] == "ray://connector-court-build-head-svc:10001"


def test_ray_scratch_space_is_memory() -> None:
    for pod in [*_ray_pods(), _driver_pod()]:
        (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
        assert tmp["emptyDir"]["medium"] == "Memory"
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("resource", ["cpu", "memory"])
def test_every_container_asks_for_and_is_limited_in(resource: str) -> None:
    for pod in [*_ray_pods(), _driver_pod()]:
        for container in pod["containers"]:
            assert resource in container["resources"]["requests"], container["name"]
            assert resource in container["resources"]["limits"], container["name"]
    head = _documents()["RayCluster/connector-court-build"]["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"


def test_the_cluster_is_closed_to_all_but_its_own_pods() -> None:
    policy = _documents()["NetworkPolicy/connector-court-build-closed"]["spec"]
    own = {"app.kubernetes.io/component": "connector-build", "xiezhi.internal/connector": "court"}
    assert policy["podSelector"]["matchLabels"] == own
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert [peer["podSelector"]["matchLabels"] for rule in policy["ingress"] for peer in rule["from"]] == [own]
    egress_peers = [peer for rule in policy["egress"] for peer in rule.get("to", [])]
    assert [peer["podSelector"]["matchLabels"] for peer in egress_peers] == [own]
    for pod in _ray_pods():
        assert pod["automountServiceAccountToken"] is False
