"""deploy/: the Ray Serve config and the KubeRay RayService parse, validate against Ray Serve's own schema, name the
real application builder, and build the application they describe (secrets from the environment, as deployed)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

serve_schema = pytest.importorskip("ray.serve.schema", reason="Ray Serve is not installed (the 'ray' extra)")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))


def _serve_configs() -> dict[str, dict]:
    service = _load("kuberay-rayservice.yaml")
    return {
        "serve-config.yaml": _load("serve-config.yaml"),
        "kuberay-rayservice.yaml": yaml.safe_load(service["spec"]["serveConfigV2"]),
    }


@pytest.mark.parametrize("name", ["serve-config.yaml", "kuberay-rayservice.yaml"])
def test_the_serve_config_is_valid_and_builds_the_application(name, monkeypatch):
    config = _serve_configs()[name]
    schema = serve_schema.ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.route_prefix == "/"
    module_name, _, attribute = app.import_path.partition(":")
    builder = getattr(importlib.import_module(module_name), attribute)
    from imagegen.server.rayserve.app import INGRESS_NAME, app_builder

    assert builder is app_builder
    monkeypatch.setenv("IMAGEGEN_API_KEYS", "sk-from-a-secret")
    monkeypatch.setenv("IMAGEGEN_STORE", "postgresql://imagegen:pw@db:5432/imagegen")
    application = builder(app.args)
    ingress = application._bound_deployment
    assert ingress.name == INGRESS_NAME
    # The ingress gets the file's settings: secrets from the environment are read in each replica, not baked in.
    assert ingress.init_args[0] == app.args["settings"]
    assert "sk-from-a-secret" not in str(ingress.init_args)
    engine = ingress.init_args[1]._bound_deployment
    assert engine.ray_actor_options["num_gpus"] == 1  # one replica per GPU
    assert '"store_url": "postgresql://' in ingress.init_args[1]._bound_deployment.init_args[0]  # engines open it


def test_the_rayservice_serves_what_the_serve_config_serves():
    configs = _serve_configs()
    assert configs["kuberay-rayservice.yaml"] == configs["serve-config.yaml"]


def test_the_rayservice_runs_on_gpu_nodes_with_the_secret_and_the_shared_volume():
    service = _load("kuberay-rayservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    (group,) = cluster["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    replicas = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]["replicas"]
    assert group["maxReplicas"] >= replicas["max_replicas"]  # a GPU node for every engine replica
    head = cluster["headGroupSpec"]["template"]["spec"]
    for spec in (head, group["template"]["spec"]):
        (pod_container,) = spec["containers"]
        assert pod_container["envFrom"] == [{"secretRef": {"name": "imagegen"}}]
        assert {"name": "data", "mountPath": "/data"} in pod_container["volumeMounts"]
        assert spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "imagegen-data"
    # The image is deploy/Dockerfile's, whose Ray matches the cluster's.
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert f"rayproject/ray:{cluster['rayVersion']}-" in dockerfile
