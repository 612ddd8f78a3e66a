"""deploy/k8s and the Dockerfile, checked without a cluster, kubectl, kustomize or a Docker engine.

Every YAML parses; the base and both overlays are rendered by a small Kustomize subset (resources, namespace,
strategic-merge and JSON 6902 patches with targets, secretGenerator with ``behavior: replace``) so that what is
validated is what ``kubectl apply -k`` would send; core kinds validate against the Kubernetes JSON schemas of
``K8S_VERSION`` (kubernetes-validate, strict: unknown fields fail); custom resources (Strimzi, KEDA, CloudNativePG)
are checked field by field; and the manifests are checked against the code: commands, ports, health routes,
settings, topics and consumer groups come from the project itself.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import ipaddress
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings

from shared.devstack.processes import PROCESS_PORT_VARIABLES, ProcessSpec, gateway_upstream_env
from shared.events.topics import CONSUMER_GROUPS, all_topics
from shared.http import health_router
from shared.keys import SERVICE_CALLERS, generate_private_text, load_private_key, public_text
from shared.settings import PLACEHOLDER_MARK, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BUILDS = ("base", "overlays/dev", "overlays/prod")
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests target (autoscaling/v2, policy/v1, batch/v1 ttl)

Doc = dict[str, Any]

# The process name of ARCHITECTURE.md (= Deployment and Service name) -> its Settings module and entry module.
PROCESSES: dict[str, tuple[str, str]] = {
    "gateway": ("services.gateway.config", "services.gateway"),
    "auth": ("services.auth.config", "services.auth"),
    "renders-api": ("services.renders.config", "services.renders"),
    "render-worker": ("services.renders.config", "services.renders.worker"),
    "credits": ("services.credits.config", "services.credits"),
    "webhooks-api": ("services.webhooks.config", "services.webhooks"),
    "webhooks-dispatcher": ("services.webhooks.config", "services.webhooks.dispatcher"),
    "telemetry": ("services.telemetry.config", "services.telemetry"),
}
# shared/devstack names the processes after their packages; the cluster after ARCHITECTURE.md's table.
DEVSTACK_NAMES = {"renders": "renders-api", "webhooks": "webhooks-api"}
# Consumer groups whose process scales on CPU with an HPA (credits also serves the synchronous reserve API).
CPU_SCALED_GROUPS = {"credits": "credits"}
# Variables read with os.environ outside the Settings classes, by tools that never run in the cluster.
DEV_ONLY_ENVIRONMENT = {"VAR_DIR", "CI"}
# Path settings a process writes to (local storage, generated dev signing keys): must be on a writable volume.
WRITABLE_PATH_SETTINGS = {"STORAGE_DIR": {"gateway", "renders-api", "render-worker"}, "AUTH_SIGNING_KEYS_DIR": {"auth"}}
# Processes of a package that opens storage only to sign download URLs (webhook bodies): no files, no volume.
URL_SIGNING_ONLY = {"webhooks-api", "webhooks-dispatcher"}
SENSITIVE = {
    "DATABASE_URL",
    "GEMINI_API_KEY",
    "AUTH_SIGNING_KEYS",
    "S3_ACCESS_KEY_ID",
    "GATEWAY_IDENTITY_PRIVATE_KEY",
    "SERVICE_IDENTITY_KEY",
}
# Private keys, each in the Secret of the one Deployment that signs with it: the gateway's identity key (the only
# key that mints user and operator identities), auth's token keys, and the service key of each process that calls
# another's /internal API (shared.keys.SERVICE_CALLERS, by Deployment name).
PRIVATE_KEYS = {
    "GATEWAY_IDENTITY_PRIVATE_KEY": {"gateway"},
    "AUTH_SIGNING_KEYS": {"auth"},
    "SERVICE_IDENTITY_KEY": {"gateway", "auth", "renders-api", "credits"},
}
NON_PUBLIC_NETWORKS = {
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
}
CORE_GROUPS = ("v1", "apps/", "batch/", "policy/", "autoscaling/", "networking.k8s.io/", "rbac.authorization.k8s.io/")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


# --- a small Kustomize ----------------------------------------------------------------------------------------------


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def strategic_merge(target: Any, patch: Any) -> Any:
    """Maps merge key by key (``null`` deletes); lists of named maps merge by name; other lists are replaced."""
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(target, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        out_list = [copy.deepcopy(i) for i in target]
        for item in patch:
            for index, existing in enumerate(out_list):
                if isinstance(existing, dict) and existing.get("name") == item["name"]:
                    out_list[index] = strategic_merge(existing, item)
                    break
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def json6902(doc: Doc, operations: list[dict[str, Any]]) -> Doc:
    out = copy.deepcopy(doc)
    for op in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) and last != "-" else last
        if op["op"] == "remove":
            assert key in node if isinstance(node, dict) else True, f"remove of a missing {op['path']}"
            del node[key]
        elif op["op"] == "replace":
            assert (key in node) if isinstance(node, dict) else key < len(node), f"replace of a missing {op['path']}"
            node[key] = op["value"]
        elif op["op"] == "add":
            if isinstance(node, list):
                node.insert(len(node) if key == "-" else key, op["value"])
            else:
                node[key] = op["value"]
        else:
            raise AssertionError(f"unsupported JSON patch op {op['op']}")
    return out


def matches(doc: Doc, target: dict[str, Any]) -> bool:
    if "kind" in target and doc["kind"] != target["kind"]:
        return False
    if "name" in target and not re.fullmatch(target["name"], doc["metadata"]["name"]):
        return False
    labels = doc["metadata"].get("labels", {})
    if "labelSelector" in target:
        wanted = dict(part.split("=", 1) for part in target["labelSelector"].split(","))
        return all(labels.get(k) == v for k, v in wanted.items())
    return True


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value
    return pairs


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def local_file(directory: Path, name: str) -> Path:
    """A file a kustomization names; an operator's own file (secrets) may exist only as its committed ``.example``."""
    path = directory / name
    if path.exists():
        return path
    example = directory / f"{name}.example"
    assert example.exists(), f"{rel(directory)}: {name} (or {name}.example) does not exist"
    return example


def kustomize(directory: Path) -> list[Doc]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization) <= {
        "apiVersion", "kind", "namespace", "resources", "patches", "labels", "secretGenerator", "generatorOptions",
        "images",
    }, f"{directory}: a kustomization field this test does not render"  # fmt: skip
    docs: list[Doc] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        assert path.exists(), f"{rel(directory)}: resource {resource} does not exist"
        if path.is_dir():
            docs += kustomize(path)
        else:
            assert path.is_relative_to(directory), f"{resource}: kustomize loads files only under its own root"
            docs += load_docs(path)
    for generator in kustomization.get("secretGenerator", []):
        data = {}
        for name in generator.get("envs", []):
            data.update(env_file(local_file(directory, name)))
        for entry in generator.get("files", []):
            key, _, name = entry.partition("=")
            data[key] = local_file(directory, name).read_text()
        labels = dict(kustomization.get("generatorOptions", {}).get("labels", {}))
        secret: Doc = {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"], "labels": labels},
            "stringData": data,
        }  # fmt: skip
        existing = [
            i for i, d in enumerate(docs) if d["kind"] == "Secret" and d["metadata"]["name"] == generator["name"]
        ]
        if generator.get("behavior") == "replace":
            assert existing, f"secretGenerator replaces {generator['name']}, which the resources do not have"
            docs[existing[0]] = secret
        else:
            assert not existing, f"secretGenerator creates {generator['name']}, which already exists"
            docs.append(secret)
    for patch in kustomization.get("patches", []):
        if "path" in patch:
            assert (directory / patch["path"]).exists(), f"patch {patch['path']} does not exist"
            body: Any = yaml.safe_load((directory / patch["path"]).read_text())
        else:
            body = yaml.safe_load(patch["patch"])
        if isinstance(body, list):
            target = patch["target"]
        else:
            target = patch.get("target") or {"kind": body["kind"], "name": re.escape(body["metadata"]["name"])}
        hits = [i for i, d in enumerate(docs) if matches(d, target)]
        assert hits, f"{rel(directory)}: patch {patch.get('path', target)} targets no resource"
        for i in hits:
            docs[i] = json6902(docs[i], body) if isinstance(body, list) else strategic_merge(docs[i], body)
    for image in kustomization.get("images", []):  # what `kustomize edit set image` writes
        for doc in docs:
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers", []) + pod.get("initContainers", []):
                if c["image"].rsplit(":", 1)[0] == image["name"]:
                    tag = f"@{image['digest']}" if "digest" in image else f":{image.get('newTag', 'latest')}"
                    c["image"] = image.get("newName", image["name"]) + tag
    for label in kustomization.get("labels", []):
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


BUILT: dict[str, list[Doc]] = {}


def built(name: str) -> list[Doc]:
    if name not in BUILT:
        BUILT[name] = kustomize(K8S / name)
    return copy.deepcopy(BUILT[name])


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = of_kind(docs, kind)
    assert name in found, f"no {kind} {name}"
    return found[name]


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container per process"
    return containers[0]


# --- what the code reads ----------------------------------------------------------------------------------------


def settings_class(module: str) -> type[ServiceSettings]:
    cls = importlib.import_module(module).Settings
    assert issubclass(cls, ServiceSettings)
    return cls


def env_names(cls: type[BaseSettings]) -> dict[str, set[str]]:
    """Field -> the environment variables that set it (its alias choices, or env_prefix + field name)."""
    prefix = cls.model_config.get("env_prefix", "") or ""
    names = {}
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            choices = {c for c in alias.choices if isinstance(c, str) and c.isupper()}
        elif isinstance(alias, str):
            choices = {alias}
        else:
            choices = {(prefix + field).upper()}
        assert choices, f"{cls.__module__}.{field}: no environment variable sets it"
        names[field] = choices
    return names


def all_env_names() -> set[str]:
    return {n for module, _ in set(PROCESSES.values()) for ns in env_names(settings_class(module)).values() for n in ns}


def environ_reads() -> set[str]:
    """Variables read with ``os.environ``/``os.getenv`` anywhere in shared/ and services/."""
    pattern = re.compile(r"""os\.(?:environ(?:\.get|\.setdefault)?\s*[\[(]|getenv\()\s*["']([A-Z0-9_]+)["']""")
    found = set()
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        found |= set(pattern.findall(path.read_text()))
    return found


def secret_data(secret: Doc) -> dict[str, str]:
    return {**secret.get("stringData", {}), **secret.get("data", {})}


def config_and_secret(docs: list[Doc]) -> tuple[dict[str, str], dict[str, str]]:
    """The shared ConfigMap, and every variable of the platform's Secrets (shared and per-Deployment) together."""
    config = one(docs, "ConfigMap", "platform-config")["data"]
    secrets: dict[str, str] = {}
    for secret in of_kind(docs, "Secret").values():
        secrets.update(secret_data(secret))
    return config, secrets


def provided_env(docs: list[Doc], deployment: Doc) -> dict[str, str]:
    """The variables a Deployment's container receives: envFrom ConfigMaps/Secrets, then its own env."""
    c = container(deployment)
    provided: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            provided.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            secret = one(docs, "Secret", source["secretRef"]["name"])
            provided.update({**secret.get("stringData", {}), **secret.get("data", {})})
    for var in c.get("env", []):
        provided[var["name"]] = var.get("value", "<from " + str(var.get("valueFrom")) + ">")
    return provided


# --- tests: files -----------------------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in {".yaml", ".yml"})


def test_deploy_tree_has_the_base_and_both_overlays() -> None:
    for name in BUILDS:
        assert (K8S / name / "kustomization.yaml").is_file(), name
    assert len(yaml_files()) > 10


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_yaml_parses_and_names_its_kind(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict)
        if path.name == "kustomization.yaml":
            continue
        assert all((doc.get("apiVersion"), doc.get("kind"), doc.get("metadata", {}).get("name"))), doc


@pytest.mark.parametrize("build", BUILDS)
def test_kustomization_renders_with_existing_files_and_patch_targets(build: str) -> None:
    docs = built(build)
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"duplicate resources: {sorted(k for k in keys if keys.count(k) > 1)}"
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] not in CLUSTER_SCOPED}
    if build == "base":
        assert namespaces == {None}, "the base is namespace-agnostic"
    else:
        assert len(namespaces) == 1
        assert None not in namespaces
        assert set(of_kind(docs, "Namespace")) == namespaces


def test_patch_with_a_missing_target_is_refused(tmp_path: Path) -> None:
    """The renderer's own guard: a patch of a resource the build does not have must fail, not pass silently."""
    (tmp_path / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{K8S / 'base'}]\n"
        "patches:\n  - target: {kind: Deployment, name: nope}\n    patch: '[{op: replace, path: /x, value: 1}]'\n"
    )
    with pytest.raises(AssertionError, match="targets no resource"):
        kustomize(tmp_path)


# --- tests: schemas -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_core_kinds_validate_against_the_kubernetes_schemas(build: str) -> None:
    validated = 0
    for doc in built(build):
        if doc["apiVersion"].startswith(CORE_GROUPS):
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {exc.message}") from exc
            validated += 1
    assert validated >= 40


@pytest.mark.parametrize("build", BUILDS)
def test_strimzi_kafka_cluster_is_kraft_with_replication(build: str) -> None:
    docs = built(build)
    kafkas = of_kind(docs, "Kafka")
    assert set(kafkas) == {"platform"}
    kafka = kafkas["platform"]
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka["metadata"]["annotations"] == {"strimzi.io/kraft": "enabled", "strimzi.io/node-pools": "enabled"}
    spec = kafka["spec"]
    assert "zookeeper" not in spec
    listeners = spec["kafka"]["listeners"]
    assert listeners
    assert all({"name", "port", "type", "tls"} <= set(li) for li in listeners)
    plain = [li for li in listeners if li["port"] == 9092 and li["tls"] is False]
    assert plain, "the services connect without TLS on 9092"
    pools = of_kind(docs, "KafkaNodePool")
    assert pools, "KRaft with node pools needs a KafkaNodePool"
    brokers = 0
    for pool in pools.values():
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == "platform"
        assert set(pool["spec"]["roles"]) <= {"controller", "broker"}
        assert pool["spec"]["roles"]
        assert pool["spec"]["replicas"] >= 1
        storage = pool["spec"]["storage"]
        assert storage["type"] in {"jbod", "persistent-claim", "ephemeral"}
        if storage["type"] == "jbod":
            assert all({"id", "type"} <= set(v) for v in storage["volumes"])
        if "broker" in pool["spec"]["roles"]:
            brokers += pool["spec"]["replicas"]
    config = spec["kafka"]["config"]
    replication = config["default.replication.factor"]
    assert replication <= brokers
    assert config["offsets.topic.replication.factor"] == replication
    assert config["transaction.state.log.replication.factor"] == replication
    if build == "overlays/dev":
        assert brokers == 1
    else:
        assert brokers == 3
        assert replication == 3
        assert config["min.insync.replicas"] == 2
        assert set(next(iter(pools.values()))["spec"]["roles"]) == {"controller", "broker"}


@pytest.mark.parametrize("build", BUILDS)
def test_kafka_topics_are_exactly_the_platforms_topics(build: str) -> None:
    docs = built(build)
    config, _ = config_and_secret(docs)
    brokers = sum(p["spec"]["replicas"] for p in of_kind(docs, "KafkaNodePool").values())
    min_isr = one(docs, "Kafka", "platform")["spec"]["kafka"]["config"]["min.insync.replicas"]
    topics = of_kind(docs, "KafkaTopic")
    names = [t["spec"]["topicName"] for t in topics.values()]
    assert sorted(names) == sorted(all_topics())
    for topic in topics.values():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "platform"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", topic["metadata"]["name"]), "a DNS-1123 name"
        assert topic["spec"]["partitions"] == int(config["KAFKA_PARTITIONS"])
        assert 1 <= topic["spec"]["replicas"] <= brokers
        assert topic["spec"]["config"]["retention.ms"] > 0
        assert topic["spec"]["config"].get("min.insync.replicas", min_isr) < topic["spec"]["replicas"] or brokers == 1
    assert config["KAFKA_CREATE_TOPICS"] == "false", "Strimzi owns the topics"


@pytest.mark.parametrize("build", BUILDS)
def test_keda_scales_each_consumer_group_on_its_lag_up_to_the_partitions(build: str) -> None:
    docs = built(build)
    config, _ = config_and_secret(docs)
    deployments = of_kind(docs, "Deployment")
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in of_kind(docs, "KafkaTopic").values()}
    scaled = of_kind(docs, "ScaledObject")
    groups = {}
    for name, so in scaled.items():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        target = so["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        assert target["name"] in deployments
        assert name not in of_kind(docs, "HorizontalPodAutoscaler"), "KEDA owns this Deployment's HPA"
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"], "never 0: timers run there too"
        triggers = so["spec"]["triggers"]
        assert triggers
        assert all(t["type"] == "kafka" for t in triggers)
        (group,) = {t["metadata"]["consumerGroup"] for t in triggers}
        topics = sorted(t["metadata"]["topic"] for t in triggers)
        for t in triggers:
            assert t["metadata"]["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
            assert int(t["metadata"]["lagThreshold"]) > 0
        assert topics == sorted(CONSUMER_GROUPS[group]), f"{name}: one trigger per topic of group {group}"
        assert so["spec"]["maxReplicaCount"] <= min(partitions[t] for t in topics), "idle consumers past partitions"
        groups[group] = target["name"]
    assert set(groups) == set(CONSUMER_GROUPS) - set(CPU_SCALED_GROUPS)
    # the process in each Deployment really is in that group (its settings' consumer_group, from the ConfigMap)
    for group, deployment in groups.items():
        module, _ = PROCESSES[deployment]
        fields = env_names(settings_class(module))
        (variable,) = fields["consumer_group"]
        assert provided_env(docs, deployments[deployment])[variable] == group
    for group, deployment in CPU_SCALED_GROUPS.items():
        hpa = one(docs, "HorizontalPodAutoscaler", deployment)
        assert hpa["spec"]["maxReplicas"] <= min(partitions[t] for t in CONSUMER_GROUPS[group])


@pytest.mark.parametrize("build", BUILDS)
def test_http_services_scale_on_cpu(build: str) -> None:
    docs = built(build)
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert "gateway" in hpas
    scaled = {so["spec"]["scaleTargetRef"]["name"] for so in of_kind(docs, "ScaledObject").values()}
    assert set(hpas) | scaled == set(PROCESSES), "every process scales, by CPU or by lag"
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


@pytest.mark.parametrize("build", BUILDS)
def test_cloudnativepg_cluster(build: str) -> None:
    docs = built(build)
    clusters = of_kind(docs, "Cluster")
    assert set(clusters) == {"platform-db"}
    spec = clusters["platform-db"]["spec"]
    assert clusters["platform-db"]["apiVersion"] == "postgresql.cnpg.io/v1"
    assert spec["instances"] == (1 if build == "overlays/dev" else 3)
    assert spec["storage"]["size"]
    assert spec["bootstrap"]["initdb"]["database"]
    assert spec["bootstrap"]["initdb"]["owner"]
    standbys = synchronous_standbys(spec)
    assert standbys < spec["instances"] or standbys == 0, "more synchronous standbys than there are standbys"
    if build == "overlays/prod":
        assert spec["instances"] >= 3
        assert standbys >= 1, "a committed write is on a standby too before the commit returns"
    # every process takes DATABASE_URL from the Secret the operator generates: <cluster>-app, key uri
    for workload in [*of_kind(docs, "Deployment").values(), *of_kind(docs, "Job").values()]:
        spec_ = workload["spec"]["template"]["spec"]
        env = {e["name"]: e for e in spec_["containers"][0].get("env", [])}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "platform-db-app", "key": "uri"}


def synchronous_standbys(spec: Doc) -> int:
    """Standbys every commit waits for: CNPG >= 1.24's ``postgresql.synchronous`` or the older min/max fields.

    ``dataDurability: preferred`` does not count: without a standby the primary goes on alone, writes unreplicated.
    """
    synchronous = spec.get("postgresql", {}).get("synchronous")
    legacy = spec.get("minSyncReplicas", 0)
    assert not (synchronous and (legacy or "maxSyncReplicas" in spec)), "CNPG refuses both forms at once"
    if synchronous is None:
        assert legacy <= spec.get("maxSyncReplicas", legacy)
        return int(legacy)
    known = {"method", "number", "dataDurability", "maxStandbyNamesFromCluster", "standbyNamesPre", "standbyNamesPost"}
    assert set(synchronous) <= known, f"fields CNPG 1.25 does not know: {set(synchronous) - known}"
    assert synchronous["method"] in {"any", "first"}
    assert synchronous["number"] >= 1
    assert synchronous.get("dataDurability", "required") in {"required", "preferred"}
    return 0 if synchronous.get("dataDurability") == "preferred" else int(synchronous["number"])


def test_redis_statefulset_and_service() -> None:
    docs = built("base")
    sts = one(docs, "StatefulSet", "redis")
    service = one(docs, "Service", "redis")
    assert service["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    config, _ = config_and_secret(docs)
    url = urlsplit(config["REDIS_URL"])
    assert (url.hostname, url.port) == ("redis", service["spec"]["ports"][0]["port"])


# --- tests: the Deployments against the code ------------------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_a_deployment_per_process_running_a_module_of_the_project(build: str) -> None:
    docs = built(build)
    deployments = of_kind(docs, "Deployment")
    assert set(deployments) == set(PROCESSES)
    workloads = [*deployments.values(), *of_kind(docs, "Job").values()]
    for workload in workloads:
        command = container(workload)["command"]
        assert command[:2] == ["python", "-m"], command
        assert importlib.util.find_spec(command[2]) is not None, f"{command[2]} is not in the project"
    for name, deployment in deployments.items():
        assert container(deployment)["command"][2] == PROCESSES[name][1]


def test_the_storage_users_are_the_processes_that_open_storage() -> None:
    def opens_storage(module: str) -> bool:
        package = ROOT / "services" / module.split(".")[1]
        return any("storage_from_settings(" in path.read_text() for path in package.glob("*.py"))

    users = {name for name, (_, module) in PROCESSES.items() if opens_storage(module)}
    assert users == WRITABLE_PATH_SETTINGS["STORAGE_DIR"] | URL_SIGNING_ONLY


def test_entry_modules_serve_when_run() -> None:
    """``python -m X`` must start something: a package has ``__main__``, a module its ``if __name__`` block."""
    for _, module in PROCESSES.values():
        spec = importlib.util.find_spec(module)
        assert spec is not None
        assert spec.origin
        if spec.submodule_search_locations:
            source = Path(spec.origin).with_name("__main__.py").read_text()
        else:
            source = Path(spec.origin).read_text()
        assert 'if __name__ == "__main__":' in source, module
        assert "serve(" in source, module


def test_every_process_can_listen_on_the_pod_ip() -> None:
    for name, (_, module) in PROCESSES.items():
        spec = importlib.util.find_spec(module)
        assert spec is not None
        assert spec.origin
        path = Path(spec.origin)
        source = (path.with_name("__main__.py") if spec.submodule_search_locations else path).read_text()
        main = source[source.index('if __name__ == "__main__":') :]
        assert "host=" in main, f"{name}: `python -m {module}` binds 127.0.0.1 only (shared/serve.py's default)"
    data = one(built("base"), "ConfigMap", "platform-config")["data"]
    assert data["BIND_HOST"] == "0.0.0.0", "services must listen on the pod IP for their Service and probes"
    assert data["GATEWAY_HOST"] == "0.0.0.0"


def test_the_migration_job_runs_the_migrate_command() -> None:
    job = one(built("base"), "Job", "platform-migrate")
    command = container(job)["command"]
    assert command == ["python", "-m", "shared.devstack", "migrate"]
    devstack = importlib.import_module("shared.devstack.__main__")
    assert "migrate" in {c.name or c.callback.__name__ for c in devstack.app.registered_commands if c.callback}
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}


@pytest.mark.parametrize("build", BUILDS)
def test_probes_hit_the_health_routes_on_the_container_port(build: str) -> None:
    async def readiness() -> dict[str, Any]:
        return {}

    served = {getattr(r, "path", None) for r in health_router(readiness).routes}
    for name, deployment in of_kind(built(build), "Deployment").items():
        c = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in c:
                assert c[probe]["httpGet"]["path"] in served, f"{name}: {probe} on a route nobody serves"
                port = c[probe]["httpGet"]["port"]
                assert port in ports or port in ports.values(), f"{name}: {probe} on port {port}"


@pytest.mark.parametrize("build", BUILDS)
def test_container_ports_are_the_ports_the_processes_bind(build: str, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = built(build)
    for name, deployment in of_kind(docs, "Deployment").items():
        env = provided_env(docs, deployment)
        devstack_name = next(k for k in PROCESS_PORT_VARIABLES if DEVSTACK_NAMES.get(k, k) == name)
        variable = PROCESS_PORT_VARIABLES[devstack_name]
        ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
        assert int(env[variable]) == ports["http"], f"{name}: {variable}={env[variable]} but containerPort {ports}"
        if name == "gateway":
            assert int(env["GATEWAY_INTERNAL_PORT"]) == ports["internal"]
            assert set(ports) == {"http", "internal"}
        else:
            assert set(ports) == {"http"}
    config, _ = config_and_secret(docs)
    assert config["GATEWAY_HOST"] == "0.0.0.0", "the gateway must listen on the pod IP"
    assert config["BIND_HOST"] == "0.0.0.0", "the gateway's internal listener (and every service) on the pod IP"


@pytest.mark.parametrize("build", BUILDS)
def test_the_gateway_probes_its_internal_listener_which_no_service_exposes(build: str) -> None:
    """Probes and metrics are on the gateway's internal port; the Service (hence the Ingress) carries only http."""
    docs = built(build)
    c = container(one(docs, "Deployment", "gateway"))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] == "internal", probe
    service = one(docs, "Service", "gateway")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


@pytest.mark.parametrize("build", BUILDS)
def test_services_select_their_deployment_and_target_its_port(build: str) -> None:
    docs = built(build)
    deployments = of_kind(docs, "Deployment")
    services = of_kind(docs, "Service")
    for name, _deployment in deployments.items():
        assert name in services, f"no Service for {name}"
    for name, service in services.items():
        if name.startswith("redis"):
            continue
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
        selected = [
            d for d in deployments.values()
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        assert [d["metadata"]["name"] for d in selected] == [name], f"Service {name} selects {selected}"
        ports = {p["name"]: p["containerPort"] for p in container(selected[0])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports or port["targetPort"] in ports.values()
            assert port["port"] == ports.get(port["targetPort"], port["targetPort"])


@pytest.mark.parametrize("build", BUILDS)
def test_internal_urls_point_at_the_right_service(build: str) -> None:
    docs = built(build)
    config, _ = config_and_secret(docs)
    services = of_kind(docs, "Service")
    specs = [ProcessSpec(name, module, 20000 + i) for i, (name, (_, module)) in enumerate(PROCESSES.items())]
    by_port = {s.port: s.name for s in specs}
    wanted = gateway_upstream_env(specs)
    assert len(wanted) >= 10
    for variable, local in wanted.items():
        process = by_port[urlsplit(local).port or 0]
        url = urlsplit(config[variable])
        assert url.scheme == "http", variable
        assert url.hostname == process, f"{variable}={config[variable]} is not {process}"
        assert url.port == services[process]["spec"]["ports"][0]["port"], variable


@pytest.mark.parametrize("build", BUILDS)
def test_deployments_are_hardened_and_sized(build: str) -> None:
    docs = built(build)
    config, _ = config_and_secret(docs)
    for name, deployment in of_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        c = container(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 10000
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be writable"
        for path_setting, users in WRITABLE_PATH_SETTINGS.items():
            if name not in users:
                continue
            value = provided_env(docs, deployment)[path_setting]
            assert any(value == m or value.startswith(m + "/") for m in mounts), f"{name}: {value} is read-only"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{name}: resources.{kind}"
        assert pod["automountServiceAccountToken"] is False
        # SIGTERM: the preStop pause, uvicorn's 20 s drain (shared/serve.py), then the consumers' grace
        grace = float(provided_env(docs, deployment).get("SHUTDOWN_GRACE_SECONDS", config["SHUTDOWN_GRACE_SECONDS"]))
        pause = 5 if "lifecycle" in c else 0
        assert pod["terminationGracePeriodSeconds"] >= pause + 20 + grace, name
    deployments = of_kind(docs, "Deployment")
    worker = deployments.pop("render-worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    others = max(d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] for d in deployments.values())
    assert worker > others, "a render can take minutes: the worker gets the longest grace"


@pytest.mark.parametrize("build", BUILDS)
def test_a_pod_disruption_budget_per_deployment(build: str) -> None:
    docs = built(build)
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for name, deployment in of_kind(docs, "Deployment").items():
        assert name in pdbs, f"no PodDisruptionBudget for {name}"
        selector = pdbs[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        if build == "overlays/prod":
            assert pdbs[name]["spec"] == {"minAvailable": 1, "selector": pdbs[name]["spec"]["selector"]}
            minimum = of_kind(docs, "HorizontalPodAutoscaler").get(name, {}).get("spec", {}).get("minReplicas")
            minimum = minimum or one(docs, "ScaledObject", name)["spec"]["minReplicaCount"]
            assert minimum >= 2, f"{name}: minAvailable 1 with one replica would block every node drain"


# --- tests: settings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_every_setting_a_process_reads_is_provided(build: str) -> None:
    docs = built(build)
    for name, deployment in of_kind(docs, "Deployment").items():
        provided = provided_env(docs, deployment)
        fields = env_names(settings_class(PROCESSES[name][0]))
        withheld = {key for key, holders in PRIVATE_KEYS.items() if name not in holders}  # on purpose
        missing = sorted(min(names) for names in fields.values() if not names & (set(provided) | withheld))
        assert not missing, f"{name} reads settings the manifests do not set: {missing}"
        ambiguous = sorted(sorted(names & set(provided)) for names in fields.values() if len(names & set(provided)) > 1)
        assert not ambiguous, f"{name}: one setting given under two names {ambiguous}"


@pytest.mark.parametrize("build", BUILDS)
def test_every_provided_variable_is_read_by_some_settings(build: str) -> None:
    docs = built(build)
    known = all_env_names()
    config, secret = config_and_secret(docs)
    assert not set(config) & set(secret), "a variable in both the ConfigMap and the Secret"
    assert not sorted(set(config) - known), f"ConfigMap keys nobody reads: {sorted(set(config) - known)}"
    assert not sorted(set(secret) - known), f"Secret keys nobody reads: {sorted(set(secret) - known)}"
    for deployment in of_kind(docs, "Deployment").values():
        own = {e["name"] for e in container(deployment).get("env", [])}
        assert own <= known, f"{deployment['metadata']['name']} sets {sorted(own - known)}, read by nobody"


def test_variables_read_outside_the_settings_are_known() -> None:
    """A new ``os.environ`` read in shared/ or services/ must be a setting, or be known never to matter in a pod."""
    unknown = environ_reads() - all_env_names() - DEV_ONLY_ENVIRONMENT
    assert not unknown, f"read with os.environ but in no Settings class nor in the manifests: {sorted(unknown)}"
    assert "DATABASE_URL" in environ_reads(), "the migrate command reads DATABASE_URL itself"


@pytest.mark.parametrize("build", BUILDS)
def test_secrets_stay_out_of_the_configmap(build: str) -> None:
    config, secret = config_and_secret(built(build))
    sensitive = {n for n in all_env_names() if "SECRET" in n} | SENSITIVE
    assert not set(config) & sensitive, f"secrets in the ConfigMap: {sorted(set(config) & sensitive)}"
    assert set(secret) <= sensitive
    assert sensitive - {"DATABASE_URL"} <= set(secret), "DATABASE_URL comes from CloudNativePG's own Secret"


def test_the_secret_template_holds_placeholders_that_production_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = built("base")
    _, secret = config_and_secret(docs)
    for name in ("STORAGE_SIGNING_SECRET",):
        assert PLACEHOLDER_MARK in secret[name], f"{name}: the template must not carry a usable secret"
    for name, value in secret.items():
        assert value == "" or PLACEHOLDER_MARK in value, f"{name}: a template value that looks real"
    examples = set().union(*(env_file(p) for p in (K8S / "overlays/prod").glob("*.env.example")))
    assert examples | {"AUTH_SIGNING_KEYS"} == set(secret), "the *.env.example files list every secret"
    _set_environment(monkeypatch, docs, one(docs, "Deployment", "gateway"))
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ValidationError, match="placeholder"):
        settings_class("services.gateway.config")()
    monkeypatch.setenv("STORAGE_SIGNING_SECRET", "1" * 64)
    with pytest.raises(ValidationError, match="INTERNAL_IDENTITY_PUBLIC_KEY is not set"):
        settings_class("services.gateway.config")()  # the template's empty keys are the dev keys: refused


def _set_environment(monkeypatch: pytest.MonkeyPatch, docs: list[Doc], deployment: Doc) -> None:
    for name in all_env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in provided_env(docs, deployment).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", "postgresql://platform:pw@platform-db-rw:5432/platform")


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_the_dev_overlay_configuration_is_accepted_by_each_process(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value parses and validates (types, ranges, the retry schedule) as the process would read it."""
    docs = built("overlays/dev")
    _set_environment(monkeypatch, docs, one(docs, "Deployment", name))
    settings = settings_class(PROCESSES[name][0])()
    assert settings.app_env == "dev"
    assert settings.kafka_create_topics is False


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_the_prod_configuration_with_real_secrets_is_accepted(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = built("overlays/prod")
    _set_environment(monkeypatch, docs, one(docs, "Deployment", name))
    monkeypatch.setenv("STORAGE_SIGNING_SECRET", "1" * 64)
    gateway, own = generate_private_text(), generate_private_text()
    monkeypatch.setenv("INTERNAL_IDENTITY_PUBLIC_KEY", public_text(load_private_key(gateway)))
    monkeypatch.setenv("SERVICE_IDENTITY_PUBLIC_KEYS", json.dumps({"auth": public_text(load_private_key(own))}))
    for key, holders in PRIVATE_KEYS.items():
        if name in holders and key != "AUTH_SIGNING_KEYS":
            monkeypatch.setenv(key, gateway if key == "GATEWAY_IDENTITY_PRIVATE_KEY" else own)
    settings = settings_class(PROCESSES[name][0])()
    assert settings.app_env == "production"
    assert not settings.allow_private_networks
    assert settings.storage_backend == "s3"
    assert settings.s3_bucket


@pytest.mark.parametrize("build", BUILDS)
def test_each_private_key_reaches_only_the_deployment_that_signs_with_it(build: str) -> None:
    """Code execution in any other pod (the render worker decoding untrusted images, the webhooks dispatcher) finds
    no key that mints a user or operator identity, and no other service's key."""
    docs = built(build)
    config, _ = config_and_secret(docs)
    assert not set(PRIVATE_KEYS) & set(config), "private keys never in the ConfigMap"
    for name, deployment in of_kind(docs, "Deployment").items():
        provided = provided_env(docs, deployment)
        for key, holders in PRIVATE_KEYS.items():
            assert (key in provided) is (name in holders), f"{name}: {key} {'missing' if name in holders else 'leaks'}"
        refs = [s["secretRef"]["name"] for s in container(deployment).get("envFrom", []) if "secretRef" in s]
        own = [ref for ref in refs if ref != "platform-secrets"]
        assert own == ([f"{name}-keys"] if name in PRIVATE_KEYS["SERVICE_IDENTITY_KEY"] else []), name
        volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
        assert all("secret" not in v for v in volumes), f"{name}: no Secret mounted as a volume either"
    shared = secret_data(one(docs, "Secret", "platform-secrets"))
    assert not set(PRIVATE_KEYS) & set(shared), "the Secret every pod loads holds no private key"
    for job in of_kind(docs, "Job").values():
        pod = job["spec"]["template"]["spec"]
        loaded = {s["secretRef"]["name"] for c in pod["containers"] for s in c.get("envFrom", []) if "secretRef" in s}
        assert loaded <= {"platform-secrets"}, "the migration Job signs nothing"


def test_the_service_keys_are_those_of_the_services_that_call_another() -> None:
    """shared.keys.SERVICE_CALLERS (who may present a service credential) and the manifests name the same set."""
    deployment_of = {"renders": "renders-api"}
    assert {deployment_of.get(s, s) for s in SERVICE_CALLERS} == PRIVATE_KEYS["SERVICE_IDENTITY_KEY"]


def test_auth_and_gateway_agree_on_issuer_and_audience() -> None:
    config, _ = config_and_secret(built("overlays/prod"))
    assert config["AUTH_ISSUER"] == config["GATEWAY_JWT_ISSUER"]
    assert config["AUTH_AUDIENCE"] == config["GATEWAY_JWT_AUDIENCE"]


def test_overlays_set_the_environment_and_the_sizes() -> None:
    dev, prod = built("overlays/dev"), built("overlays/prod")
    assert config_and_secret(dev)[0]["APP_ENV"] == "dev"
    assert config_and_secret(prod)[0]["APP_ENV"] == "production"
    assert all(d["spec"]["replicas"] == 1 for d in of_kind(dev, "Deployment").values())
    assert all(d["spec"]["replicas"] >= 2 for d in of_kind(prod, "Deployment").values())
    worker = container(one(prod, "Deployment", "render-worker"))["resources"]["requests"]
    assert worker != container(one(dev, "Deployment", "render-worker"))["resources"]["requests"]


# --- tests: exposure ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_only_the_gateway_is_exposed_and_only_its_public_paths(build: str) -> None:
    docs = built(build)
    ingresses = of_kind(docs, "Ingress")
    assert len(ingresses) == 1
    paths = set()
    for ingress in ingresses.values():
        assert "defaultBackend" not in ingress["spec"]
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == "gateway"
                paths.add(path["path"])
    assert paths == {"/api", "/admin", "/files", "/.well-known"}
    for service in of_kind(docs, "Service").values():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "no NodePort/LoadBalancer besides the Ingress"


def _peers_select(peers: list[Doc], labels: dict[str, str]) -> bool:
    def selects(selector: Doc) -> bool:
        ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
        for expr in selector.get("matchExpressions", []):
            value = labels.get(expr["key"])
            ok &= value in expr["values"] if expr["operator"] == "In" else value not in expr["values"]
        return ok

    return any("podSelector" in p and "namespaceSelector" not in p and selects(p["podSelector"]) for p in peers)


def _policies_for(policies: list[Doc], labels: dict[str, str], direction: str) -> list[Doc]:
    return [
        p for p in policies
        if direction in p["spec"].get("policyTypes", [])
        and _peers_select([{"podSelector": p["spec"]["podSelector"]}], labels)
    ]  # fmt: skip


@pytest.mark.parametrize("build", BUILDS)
def test_network_policies(build: str) -> None:
    docs = built(build)
    policies = list(of_kind(docs, "NetworkPolicy").values())
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and "egress" not in p["spec"] for p in deny)
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in of_kind(docs, "Deployment").items()}
    # the gateway: reachable from the ingress controller's namespace only
    sources = [peer for p in _policies_for(policies, pods["gateway"], "Ingress") for r in p["spec"].get("ingress", [])
               for peer in r.get("from", [])]  # fmt: skip
    assert sources
    assert all(set(peer) == {"namespaceSelector"} for peer in sources), sources
    # internal services: from the platform's own pods only, and the gateway is one of them
    for name, labels in pods.items():
        if name == "gateway":
            continue
        rules = [r for p in _policies_for(policies, labels, "Ingress") for r in p["spec"].get("ingress", [])]
        assert rules, f"{name} accepts nothing"
        for rule in rules:
            assert rule.get("from"), f"{name} accepts anyone"
            assert all("namespaceSelector" not in peer for peer in rule["from"]), name
            assert _peers_select(rule["from"], pods["gateway"]), f"{name} does not accept the gateway"
    # public egress: every address but private, CGNAT, loopback and link-local ones
    public = [
        peer["ipBlock"] for p in policies for r in p["spec"].get("egress", []) for peer in r.get("to", [])
        if "ipBlock" in peer and ipaddress.ip_network(peer["ipBlock"]["cidr"]).version == 4
    ]  # fmt: skip
    assert public
    assert all(b["cidr"] == "0.0.0.0/0" and NON_PUBLIC_NETWORKS <= set(b["except"]) for b in public)
    reaching_out = {
        n for n, labels in pods.items()
        for p in _policies_for(policies, labels, "Egress") for r in p["spec"].get("egress", [])
        for peer in r.get("to", []) if "ipBlock" in peer
    }  # fmt: skip
    assert "webhooks-dispatcher" in reaching_out
    assert "render-worker" in reaching_out
    assert not reaching_out & {"auth", "credits", "telemetry"}, "no outside world for services that need none"


# --- tests: the image -----------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_builds_a_small_non_root_image() -> None:
    """Static checks (no Docker engine here): pinned bases, non-root numeric user, no build tools at run time."""
    instructions = dockerfile_instructions()
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay in the build stage"
    for base in froms:
        image = base.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), f"unpinned base {image}"
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [arg for op, arg in final if op == "USER"]
    assert users
    assert re.fullmatch(r"[1-9]\d{3,}(:\d+)?", users[-1]), "the final stage runs as a numeric non-root uid"
    assert users[-1].split(":")[0] == "10001"
    final_text = " ".join(arg for _, arg in final)
    assert "build-essential" not in final_text
    assert "gcc" not in final_text
    assert "apt-get install" not in final_text
    assert "COPY --from=build /opt/venv /opt/venv" in " ".join(f"{op} {arg}" for op, arg in final)
    envs = " ".join(arg for op, arg in final if op == "ENV")
    assert "PYTHONUNBUFFERED=1" in envs
    assert not re.search(r"(SECRET|PASSWORD|TOKEN|API_KEY)\w*=", envs), "no default secrets in the image"
    assert not any(op == "ADD" and re.search(r"https?://", arg) for op, arg in instructions), "ADD of a URL"
    assert not any(op == "ARG" and re.search(r"SECRET|PASSWORD|TOKEN", arg) for op, arg in instructions)
    for op, arg in instructions:
        if op in {"CMD", "ENTRYPOINT"}:
            assert arg.startswith("["), f"{op} in exec form, so SIGTERM reaches python"
            command = yaml.safe_load(arg)
            assert command[:2] == ["python", "-m"]
            assert importlib.util.find_spec(command[2]) is not None
    installs = [arg for op, arg in instructions if op == "RUN" and "pip install" in arg]
    assert any(re.search(r"pip install \.(\s|$)", arg) for arg in installs), "a regular install of the project"
    assert not any("-e " in arg or "[dev]" in arg for arg in installs), "no editable install, no dev extras"


def test_the_image_ships_the_dashboard_assets() -> None:
    """The dashboard's files are package data of ``services.telemetry``, so ``pip install .`` puts them in the image."""
    dashboard = ROOT / "services/telemetry/dashboard"
    assert any(dashboard.iterdir())
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "dashboard/*" in package_data.get("services.telemetry", [])


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "var", "bench", "test-artifacts", "tests", "*.env", "*.pem"} <= ignored
    needed = {arg.split()[0] for op, arg in dockerfile_instructions() if op == "COPY" and "--from" not in arg}
    assert needed == {"pyproject.toml", "shared", "services"}
    assert not needed & ignored


def _iter_images(docs: list[Doc]) -> Iterator[tuple[str, str]]:
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            yield doc["metadata"]["name"], c["image"]


def test_every_image_has_a_pinned_tag() -> None:
    images = dict(_iter_images(built("overlays/prod")))
    assert images
    for name, image in images.items():
        assert re.search(r":[\w.-]*\d[\w.-]*$|@sha256:", image), f"{name}: {image}"
        assert not image.endswith(":latest"), f"{name}: {image}"
    app = {image for name, image in images.items() if name != "redis"}
    assert len(app) == 1, "one image for every process"
