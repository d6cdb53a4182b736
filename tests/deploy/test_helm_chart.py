"""The Helm chart in deploy/helm/tracker: linted and rendered by the real Helm library.

helm-sdkpy wraps Helm v4's Go library but exposes no `helm template`: the only way it
renders a chart is a real `helm install`. So each render installs the chart into
FakeKubeAPI, an in-memory stand-in for the Kubernetes API on 127.0.0.1 that serves just
what an install needs (discovery, OpenAPI v3, namespaced create/get/list/delete). Hooks
run for real, in weight order, before the release's own objects are created. Every
rendered object is then validated against the Kubernetes JSON schemas.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

try:
    import helm_sdkpy
except ImportError as exc:  # the test fails, never skips, without it
    helm_sdkpy = None
    HELM_SDKPY_IMPORT_ERROR: ImportError | None = exc
else:
    HELM_SDKPY_IMPORT_ERROR = None

try:
    import kubernetes_validate
except ImportError as exc:
    kubernetes_validate = None
    KUBERNETES_VALIDATE_IMPORT_ERROR: ImportError | None = exc
else:
    KUBERNETES_VALIDATE_IMPORT_ERROR = None

INSTALL_HINT = (
    ".venv/bin/pip install --ignore-requires-python 'helm-sdkpy==0.1.32' "
    "'kubernetes-validate>=1.30' pyyaml"
)
CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "tracker"
RELEASE = "tr"
NAMESPACE = "tracker"
KUBERNETES_VERSION = "1.30.0"
SERVERS = ("collector", "query", "health")
BACKGROUND = ("worker",)  # Deployments without a Service (the fetcher is opt-in)
HEALTH_PORT = 5000
# Severities of Helm's lint messages: 1 info, 2 warning, 3 error.
LINT_WARNING = 2

DEFAULT_VALUES: dict[str, Any] = {}
OVERRIDE_VALUES: dict[str, Any] = {
    "existingSecret": "tracker-prod-secrets",
    "collector": {"replicas": 3},
    "query": {"replicas": 3},
    "health": {"enabled": False},
    "fetcher": {"enabled": True, "replicas": 3, "existingSecret": "apple-accounts"},
    "worker": {"replicas": 3},
    "config": {"TRACKER_LOG_LEVEL": "DEBUG"},
}
SECRET_VALUES: dict[str, Any] = {
    "secrets": {
        "TRACKER_DATABASE_URL": "postgresql://tracker:s3cret@db.example:5432/tracker",
        "TRACKER_REDIS_URL": "redis://redis.example:6379/0",
        "TRACKER_JWT_SIGNING_KEY": "k" * 48,
        "TRACKER_KEK_RING": "k1=QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY=",
    },
    "migrations": {"enabled": False},
}
SESSION = '{"account": "a@example.com", "anisette": "http://anisette:6969"}'
# What an operator running it for real turns on: autoscaling, monitoring, a fetcher whose
# accounts the chart keeps, network rules.
PRODUCTION_VALUES: dict[str, Any] = {
    "existingSecret": "tracker-prod-secrets",
    "collector": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8}},
    "worker": {
        "autoscaling": {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 6,
            "queueLag": {"enabled": True},
        }
    },
    "fetcher": {
        "enabled": True,
        "accounts": {"account-1.json": SESSION, "account-2.json": SESSION},
        "autoscaling": {"enabled": True, "queueLag": {"enabled": True}},
    },
    "networkPolicy": {
        "grpcFrom": [{"namespaceSelector": {"matchLabels": {"name": "apps"}}}],
        "monitoringFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
    },
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
        "prometheusRule": {"enabled": True},
    },
}
PROMETHEUS_OPERATOR_KINDS = ("ServiceMonitor", "PrometheusRule")  # CRDs: no Kubernetes schema


# --- A Kubernetes API just big enough for `helm install` ---------------------------------

# (plural, kind, namespaced) per group/version; "" is the core group.
API_RESOURCES: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("pods", "Pod", True),
        ("namespaces", "Namespace", False),
    ],
    ("apps", "v1"): [("deployments", "Deployment", True)],
    ("batch", "v1"): [("jobs", "Job", True)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    ("autoscaling", "v2"): [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    ("networking.k8s.io", "v1"): [("networkpolicies", "NetworkPolicy", True)],
    # The Prometheus Operator's CRDs, as a cluster with it installed serves them.
    ("monitoring.coreos.com", "v1"): [
        ("servicemonitors", "ServiceMonitor", True),
        ("prometheusrules", "PrometheusRule", True),
    ],
}
OBJECT_PATH = re.compile(
    r"/(?:api/v1|apis/[^/]+/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?"
)


def _group_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _status(code: int, reason: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "code": code,
    }


def _openapi_v3(group: str, version: str) -> dict[str, Any]:
    """PATCH paths that take fieldValidation: client-go then leaves validation to the server."""
    field_validation = {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
    paths = {}
    for plural, kind, namespaced in API_RESOURCES[(group, version)]:
        scope = "namespaces/{namespace}/" if namespaced else ""
        paths[f"/{_group_path(group, version)}/{scope}{plural}/{{name}}"] = {
            "parameters": [field_validation],
            "patch": {
                "x-kubernetes-group-version-kind": {
                    "group": group,
                    "version": version,
                    "kind": kind,
                },
                "parameters": [field_validation],
                "responses": {"200": {"description": "OK"}},
            },
        }
    return {"openapi": "3.0.0", "info": {"title": "fake", "version": version}, "paths": paths}


T = TypeVar("T")
Reply = tuple[int, dict[str, Any] | None]  # None: an empty body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each keep-alive reply waits ~40 ms for an ACK
    api: FakeKubeAPI

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        code, body = self._route(method, raw)
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str, raw: bytes) -> Reply:
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        if path == "/version":
            return 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            groups = [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                    "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version},
                }
                for group, version in API_RESOURCES
                if group
            ]
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        if path == "/openapi/v3":
            paths = {
                _group_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_group_path(g, v)}?hash=0"}
                for g, v in API_RESOURCES
            }
            return 200, {"paths": paths}
        for (group, version), resources in API_RESOURCES.items():
            if path == "/" + _group_path(group, version):
                return 200, _resource_list(group, version, resources)
            if path == "/openapi/v3/" + _group_path(group, version):
                return 200, _openapi_v3(group, version)
        match = OBJECT_PATH.fullmatch(path)
        if match is None:
            return 404, _status(404, "NotFound")
        if "protobuf" in (self.headers.get("Content-Type") or ""):
            # Helm's own release records (its storage driver writes protobuf): not part of
            # the chart, so acknowledged and dropped.
            kinds = {plural: kind for plural, kind, _ in API_RESOURCES[("", "v1")]}
            return 201, {
                "kind": kinds.get(match["plural"], "Secret"),
                "apiVersion": "v1",
                "metadata": {"name": match["name"] or "release"},
            }
        return self.api.call(
            method, match["ns"], match["plural"], match["name"], parse_qs(url.query), raw
        )

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


def _resource_list(
    group: str, version: str, resources: list[tuple[str, str, bool]]
) -> dict[str, Any]:
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": verbs,
            }
            for plural, kind, namespaced in resources
        ],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Informers Helm has stopped hang up mid-request: nothing to report.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class FakeKubeAPI:
    """In-memory Kubernetes API on an ephemeral loopback port; records what was created."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    created: list[tuple[str, str]] = field(default_factory=list)

    def __enter__(self) -> FakeKubeAPI:
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def call(
        self,
        method: str,
        namespace: str,
        plural: str,
        name: str | None,
        query: dict[str, list[str]],
        raw: bytes,
    ) -> Reply:
        """One request on namespaced objects."""
        if method == "GET" and name:
            found = self.objects.get((namespace, plural, name))
            return (200, found) if found else (404, _status(404, "NotFound"))
        if method == "GET" and query.get("watch"):
            return 200, None  # an empty watch: informers fall back to LIST
        if method == "GET":
            selector = (query.get("labelSelector") or [""])[0]
            wanted = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
            items = [
                obj
                for (ns, kind_plural, _), obj in self.objects.items()
                if (ns, kind_plural) == (namespace, plural)
                and wanted.items() <= (obj["metadata"].get("labels") or {}).items()
            ]
            return 200, {
                "kind": "List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "1"},
                "items": items,
            }
        if method in ("POST", "PUT"):
            obj = json.loads(raw)
            meta = obj.setdefault("metadata", {})
            meta.update(
                namespace=namespace, uid=str(uuid.uuid4()), resourceVersion="1", generation=1
            )
            meta.setdefault("creationTimestamp", "2024-01-01T00:00:00Z")
            if obj.get("kind") == "Job":  # the migration "runs" at once and succeeds
                obj["status"] = {
                    "succeeded": 1,
                    "startTime": "2024-01-01T00:00:00Z",
                    "completionTime": "2024-01-01T00:00:01Z",
                    "conditions": [{"type": "Complete", "status": "True"}],
                }
            self.objects[(namespace, plural, meta["name"])] = obj
            self.created.append((obj["kind"], meta["name"]))
            return (201 if method == "POST" else 200), obj
        if method == "DELETE" and name:
            self.objects.pop((namespace, plural, name), None)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 405, _status(405, "MethodNotAllowed")

    @property
    def kubeconfig(self) -> str:
        server = f"http://127.0.0.1:{self._server.server_address[1]}"
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "fake", "user": {}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE},
                    }
                ],
                "current-context": "fake",
            }
        )


# --- Rendering ---------------------------------------------------------------------------


@dataclass
class Release:
    """What one `helm install` of the chart produced."""

    objects: list[dict[str, Any]]  # the release's own objects
    hooks: list[dict[str, Any]]  # hook objects, in the order Helm ran them
    notes: str
    created: list[tuple[str, str]]  # (kind, name) in the order they reached the API

    @property
    def everything(self) -> list[dict[str, Any]]:
        return self.objects + self.hooks

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        matches = [
            obj
            for obj in self.everything
            if obj["kind"] == kind and obj["metadata"]["name"] == name
        ]
        assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
        return matches[0]

    def hook(self, kind: str) -> dict[str, Any]:
        matches = [obj for obj in self.hooks if obj["kind"] == kind]
        assert len(matches) == 1, f"expected one {kind} hook, found {len(matches)}"
        return matches[0]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one helm-sdkpy call on a private loop, leaving any suite-wide loop alone."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def require_helm_sdkpy() -> Any:
    if helm_sdkpy is None:
        pytest.fail(f"helm-sdkpy is not installed ({HELM_SDKPY_IMPORT_ERROR}); run: {INSTALL_HINT}")
    return helm_sdkpy


def require_kubernetes_validate() -> Any:
    if kubernetes_validate is None:
        error = KUBERNETES_VALIDATE_IMPORT_ERROR
        pytest.fail(f"kubernetes-validate is not installed ({error}); run: {INSTALL_HINT}")
    return kubernetes_validate


def install(values: dict[str, Any]) -> Release:
    """`helm install` the chart with these values into a fresh FakeKubeAPI."""
    helm = require_helm_sdkpy()
    with FakeKubeAPI() as api:
        config = helm.Configuration(namespace=NAMESPACE, kubeconfig=api.kubeconfig)
        result = run(
            helm.Install(config).run(RELEASE, str(CHART), values=values, wait=False, timeout=30)
        )
    hooks = [yaml.safe_load(hook["manifest"]) for hook in result.get("hooks") or []]
    return Release(
        objects=[doc for doc in yaml.safe_load_all(result["manifest"]) if doc],
        hooks=hooks,
        notes=result["info"].get("notes", ""),
        created=list(api.created),
    )


@pytest.fixture(scope="module")
def default_release() -> Release:
    return install(DEFAULT_VALUES)


@pytest.fixture(scope="module")
def override_release() -> Release:
    return install(OVERRIDE_VALUES)


@pytest.fixture(scope="module")
def secret_release() -> Release:
    return install(SECRET_VALUES)


@pytest.fixture(scope="module")
def production_release() -> Release:
    return install(PRODUCTION_VALUES)


def name_of(component: str) -> str:
    return f"{RELEASE}-tracker-{component}"


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def only_container(deployment_or_job: dict[str, Any]) -> dict[str, Any]:
    containers = deployment_or_job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def chart_app_version() -> str:
    return str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


# --- Tests -------------------------------------------------------------------------------


def test_chart_passes_helm_lint() -> None:
    helm = require_helm_sdkpy()
    result = run(helm.Lint(helm.Configuration(namespace=NAMESPACE)).run(str(CHART)))

    assert result["TotalChartsLinted"] == 1
    # helm-sdkpy serialises Go errors as {}, so only severity and path survive: run
    # `helm lint deploy/helm/tracker` for the wording.
    problems = [m for m in result["Messages"] if m["Severity"] >= LINT_WARNING]
    assert problems == [], f"helm lint reported warnings or errors: {problems}"
    assert not result["Errors"]


def test_each_enabled_server_gets_a_deployment_and_a_grpc_service(default_release: Release) -> None:
    assert sorted(d["metadata"]["name"] for d in default_release.of_kind("Deployment")) == sorted(
        name_of(c) for c in (*SERVERS, *BACKGROUND)
    )
    assert sorted(s["metadata"]["name"] for s in default_release.of_kind("Service")) == sorted(
        name_of(c) for c in SERVERS
    )
    for component in SERVERS:
        deployment = default_release.get("Deployment", name_of(component))
        service = default_release.get("Service", name_of(component))
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == component
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] == component
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == component

        [port] = service["spec"]["ports"]
        assert port["name"] == "grpc"
        container_ports = {p["name"] for p in only_container(deployment)["ports"]}
        assert port["targetPort"] in container_ports


def test_servers_run_their_console_script_on_their_ports(default_release: Release) -> None:
    expected = {
        "collector": (["tracker-collector"], {"grpc": 9000, "health": HEALTH_PORT}, 9000),
        "query": (["tracker-query"], {"grpc": 8000, "health": HEALTH_PORT}, 8000),
        "health": (["tracker-health"], {"health": HEALTH_PORT}, HEALTH_PORT),
    }
    for component, (command, ports, service_port) in expected.items():
        container = only_container(default_release.get("Deployment", name_of(component)))
        assert container["command"] == command
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
            **ports,
            "metrics": 9464,
        }
        assert container["image"] == f"tracker-services:{chart_app_version()}"
        service = default_release.get("Service", name_of(component))
        assert service["spec"]["ports"][0]["port"] == service_port
    health_service = default_release.get("Service", name_of("health"))
    assert health_service["spec"]["ports"][0]["targetPort"] == "health"


def test_the_fetcher_reads_its_apple_accounts_from_a_mounted_secret(
    default_release: Release, override_release: Release, production_release: Release
) -> None:
    for release, secret in (
        (production_release, f"{RELEASE}-tracker-findmy-accounts"),
        (override_release, "apple-accounts"),
    ):
        deployment = release.get("Deployment", name_of("fetcher"))
        container = only_container(deployment)
        assert container["command"] == ["tracker-fetcher"]
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
            "health": HEALTH_PORT,
            "metrics": 9464,
        }
        assert container["env"] == [
            {"name": "TRACKER_FINDMY_ACCOUNT_FILE", "value": "/var/run/tracker/findmy"}
        ]
        assert {
            "name": "findmy-accounts",
            "mountPath": "/var/run/tracker/findmy",
            "readOnly": True,
        } in container["volumeMounts"]
        [volume] = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "findmy-accounts"]
        assert volume["secret"] == {"secretName": secret, "defaultMode": 0o400}
    assert override_release.get("Deployment", name_of("fetcher"))["spec"]["replicas"] == 3
    # existingSecret: the chart makes none; accounts in values: the chart makes it
    assert not [o for o in override_release.everything if "findmy" in o["metadata"]["name"]]
    made = production_release.get("Secret", f"{RELEASE}-tracker-findmy-accounts")
    assert {k: base64.b64decode(v).decode() for k, v in made["data"].items()} == {
        "account-1.json": SESSION,
        "account-2.json": SESSION,
    }
    config = default_release.get("ConfigMap", f"{RELEASE}-tracker-config")["data"]
    assert config["REQUEST_INTERVAL_HOURS"] == "0.25"
    assert config["MAX_KEYS_PER_BATCH"] == "64"


def test_the_worker_runs_its_console_script_with_health_and_metrics_only(
    default_release: Release, override_release: Release
) -> None:
    worker = default_release.get("Deployment", name_of("worker"))
    container = only_container(worker)
    assert container["command"] == ["tracker-worker"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "health": HEALTH_PORT,
        "metrics": 9464,
    }
    assert worker["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    assert worker["spec"]["replicas"] == 1
    assert override_release.get("Deployment", name_of("worker"))["spec"]["replicas"] == 3
    assert "Worker" in default_release.notes


def test_probes_are_native_grpc_probes_on_the_health_port(default_release: Release) -> None:
    for deployment in default_release.of_kind("Deployment"):
        container = only_container(deployment)
        # startup: the process is up (a database outage must not restart pods in a loop);
        # readiness: what the process needs answers.
        for probe, service in (
            ("startupProbe", "liveness"),
            ("readinessProbe", ""),
            ("livenessProbe", "liveness"),
        ):
            assert container[probe]["grpc"] == {"port": HEALTH_PORT, "service": service}, (
                deployment["metadata"]["name"],
                probe,
            )
            assert not {"httpGet", "tcpSocket", "exec"} & container[probe].keys()


def test_pods_run_non_root_on_a_read_only_root_filesystem(default_release: Release) -> None:
    config = default_release.get("ConfigMap", f"{RELEASE}-tracker-config")["data"]
    job = default_release.hook("Job")
    workloads = [*default_release.of_kind("Deployment"), job]
    for workload in workloads:
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["runAsNonRoot"] is True
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        [tmp] = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert "emptyDir" in tmp
    for deployment in default_release.of_kind("Deployment"):
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert grace == 30
        # SIGTERM: drain, then in-flight calls get the grace, and the process exits in time
        assert grace > int(config["TRACKER_SHUTDOWN_DRAIN_S"]) + int(
            config["TRACKER_SHUTDOWN_GRACE_S"]
        )


def test_config_map_holds_the_settings_and_every_pod_reads_config_and_secret(
    default_release: Release,
) -> None:
    config = default_release.get("ConfigMap", f"{RELEASE}-tracker-config")["data"]
    assert config == {
        "TRACKER_BIND_HOST": "0.0.0.0",
        "TRACKER_COLLECTOR_PORT": "9000",
        "TRACKER_QUERY_PORT": "8000",
        "TRACKER_HEALTH_PORT": "5000",
        "TRACKER_METRICS_PORT": "9464",
        "TRACKER_LOG_LEVEL": "INFO",
        "TRACKER_LOG_FORMAT": "json",
        "TRACKER_ACCESS_LOG_SAMPLE": "0",
        "TRACKER_DB_POOL_MAX": "10",
        "TRACKER_HEALTH_CHECK_INTERVAL_S": "2",
        "TRACKER_HEALTH_MAX_AGE_S": "10",
        "TRACKER_HEALTH_PROCESS": "true",
        "TRACKER_DATABASE_READ_MAX_LAG_S": "30",
        "TRACKER_DATABASE_READ_FALLBACK": "primary",
        "TRACKER_SHUTDOWN_DRAIN_S": "5",
        "TRACKER_SHUTDOWN_GRACE_S": "10",
        "TRACKER_GRPC_MAX_CONNECTION_AGE_S": "300",
        "TRACKER_GRPC_MAX_CONNECTION_AGE_GRACE_S": "30",
        "TRACKER_ENVIRONMENT": "production",
        "TRACKER_ACCESS_TOKEN_TTL_S": "900",
        "TRACKER_REFRESH_TOKEN_TTL_S": "2592000",
        "TRACKER_INGEST_TRACKER_CACHE_TTL_S": "10",
        "TRACKER_LOGIN_MAX_FAILURES_PER_ACCOUNT": "10",
        "TRACKER_LOGIN_MAX_FAILURES_PER_ADDRESS": "100",
        "TRACKER_LOGIN_ADDRESS_HEADER": "",
        "TRACKER_LOGIN_TRUSTED_PROXIES": "",
        "TRACKER_PASSWORD_HASH_CONCURRENCY": "2",
        "REQUEST_INTERVAL_HOURS": "0.25",
        "FETCH_INTERVAL": "1",
        "MAX_KEYS_PER_BATCH": "64",
        "MAX_REPORT_AGE_DAYS": "7",
        "TRACKER_FETCH_ACCOUNT_BUDGET_PER_HOUR": "4",
        "TRACKER_FETCH_OVERLAP_H": "6",
        "TRACKER_FETCH_END_GRACE_H": "24",
        "TRACKER_FETCH_KEY_CACHE": "250000",
        "TRACKER_FINDMY_FETCH_URL": "https://gateway.icloud.com/findmyservice/v2/fetch",
        "ANISETTE_SERVER": "",
        "TRACKER_MAX_MESSAGE_BYTES": "16777216",
        "TRACKER_REPORT_MAX_CLOCK_SKEW_S": "300",
        "TRACKER_REPORT_PARTITIONS_BACK_MONTHS": "1",
        "TRACKER_REPORT_PARTITIONS_AHEAD_MONTHS": "3",
        "TRACKER_RETENTION_SIGHTINGS_DAYS": "90",
        "TRACKER_RETENTION_DETECTOR_STATUSES_DAYS": "365",
        "TRACKER_RETENTION_EVENTS_DAYS": "30",
        "TRACKER_RETENTION_DELIVERED_WEBHOOK_DAYS": "7",
    }
    secret = default_release.get("Secret", f"{RELEASE}-tracker-secrets")
    assert not secret.get("data"), "empty secrets must not be rendered as empty keys"
    for deployment in default_release.of_kind("Deployment"):
        assert only_container(deployment)["envFrom"] == [
            {"configMapRef": {"name": f"{RELEASE}-tracker-config"}},
            {"secretRef": {"name": f"{RELEASE}-tracker-secrets"}},
        ]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert {"checksum/config", "checksum/secret"} <= annotations.keys()
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "9464"
        ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in ports
    assert "WARNING" in default_release.notes


def test_secrets_are_rendered_only_when_set(secret_release: Release) -> None:
    secret = secret_release.get("Secret", f"{RELEASE}-tracker-secrets")
    decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert decoded == SECRET_VALUES["secrets"]
    assert secret_release.hooks == [], "migrations.enabled=false renders no hook"
    assert "WARNING" not in secret_release.notes


def test_pods_roll_when_config_or_secret_changes(
    default_release: Release, override_release: Release, secret_release: Release
) -> None:
    def annotations(release: Release) -> dict[str, str]:
        deployment = release.get("Deployment", name_of("collector"))
        return deployment["spec"]["template"]["metadata"]["annotations"]

    assert (
        annotations(default_release)["checksum/config"]
        != annotations(override_release)["checksum/config"]
    )
    assert (
        annotations(default_release)["checksum/config"]
        == annotations(secret_release)["checksum/config"]
    )
    assert (
        annotations(default_release)["checksum/secret"]
        != annotations(secret_release)["checksum/secret"]
    )


def test_overrides_existing_secret_replicas_and_disabled_health(override_release: Release) -> None:
    assert [s for s in override_release.everything if s["kind"] == "Secret"] == []
    assert {d["metadata"]["name"] for d in override_release.of_kind("Deployment")} == {
        name_of("collector"),
        name_of("query"),
        name_of("fetcher"),
        name_of("worker"),
    }
    assert {s["metadata"]["name"] for s in override_release.of_kind("Service")} == {
        name_of("collector"),
        name_of("query"),
    }
    for deployment in override_release.of_kind("Deployment"):
        assert deployment["spec"]["replicas"] == 3
        assert {"secretRef": {"name": "tracker-prod-secrets"}} in only_container(deployment)[
            "envFrom"
        ]
        assert "checksum/secret" not in deployment["spec"]["template"]["metadata"]["annotations"]
    job = override_release.hook("Job")
    assert {"secretRef": {"name": "tracker-prod-secrets"}} in only_container(job)["envFrom"]
    assert (
        override_release.get("ConfigMap", f"{RELEASE}-tracker-config")["data"]["TRACKER_LOG_LEVEL"]
        == "DEBUG"
    )


def test_migrations_run_as_a_hook_before_the_servers_exist(default_release: Release) -> None:
    job = default_release.hook("Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    # migrations first (an init container), then the cities, once: `nearest_city` is filled
    # in a cluster as after bootstrap.sh
    [migrate] = pod_spec(job)["initContainers"]
    assert migrate["command"] == ["trackerctl", "migrate"]
    container = only_container(job)
    assert container["command"] == [
        "trackerctl",
        "geo",
        "load",
        "--if-empty",
        "--min-population",
        "1000",
    ]
    assert migrate["envFrom"] == container["envFrom"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate"

    # Hooks run before the release's ConfigMap and Secret exist: the Job reads hook copies
    # with the same data, created before it (lower weight).
    hook_config = default_release.hook("ConfigMap")
    hook_secret = default_release.hook("Secret")
    assert container["envFrom"] == [
        {"configMapRef": {"name": hook_config["metadata"]["name"]}},
        {"secretRef": {"name": hook_secret["metadata"]["name"]}},
    ]
    assert (
        hook_config["data"] == default_release.get("ConfigMap", f"{RELEASE}-tracker-config")["data"]
    )
    assert hook_secret.get("data") == default_release.get(
        "Secret", f"{RELEASE}-tracker-secrets"
    ).get("data")
    for hook in (hook_config, hook_secret):
        assert int(hook["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            annotations["helm.sh/hook-weight"]
        )

    order = [kind for kind, _ in default_release.created]
    assert order.index("Job") < order.index("Deployment")
    assert order.index("Secret") < order.index("Job")
    assert "serviceAccountName" not in pod_spec(job), (
        "the release's ServiceAccount does not exist yet"
    )


def test_every_object_carries_the_shared_labels(default_release: Release) -> None:
    for obj in default_release.everything:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "tracker"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize(
    "release_fixture",
    ["default_release", "override_release", "secret_release", "production_release"],
)
def test_every_rendered_object_is_valid_kubernetes(
    release_fixture: str, request: pytest.FixtureRequest
) -> None:
    validate = require_kubernetes_validate()
    release: Release = request.getfixturevalue(release_fixture)
    assert release.everything
    invalid = []
    for obj in release.everything:
        if obj["kind"] in PROMETHEUS_OPERATOR_KINDS:
            continue  # CRDs: test_monitoring_objects_use_the_metrics_the_code_exports
        try:
            validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except validate.ValidationError as error:
            where = "/".join(str(part) for part in error.absolute_path)
            invalid.append(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {error.message}")
    assert invalid == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"terminationGracePeriodSeconds": 15},
            "must exceed config.TRACKER_SHUTDOWN_DRAIN_S + TRACKER_SHUTDOWN_GRACE_S (15)",
        ),
        ({"config": {"TRACKER_SHUTDOWN_DRAIN_S": "25"}}, "must exceed config.TRACKER_SHUTDOWN"),
        ({"config": {"TRACKER_DATABASE_URL": "postgresql://x"}}, "is a secret"),
        ({"config": {"DB_PASSWORD": "x"}}, "is a secret"),
        (
            {
                "fetcher": {
                    "enabled": True,
                    "existingSecret": "a",
                    "terminationGracePeriodSeconds": 5,
                }
            },
            "fetcher: terminationGrace",
        ),
        ({"fetcher": {"enabled": True}}, "fetcher.enabled needs Apple accounts"),
    ],
)
def test_chart_refuses_values_that_break_the_deployment(
    values: dict[str, Any], message: str
) -> None:
    helm = require_helm_sdkpy()
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        install(values)


# --- Issue 15: production parts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"collector": {"replicas": "two"}}, "/collector/replicas"),
        ({"migrations": {"citiesMinPopulation": 1234}}, "/migrations/citiesMinPopulation"),
        ({"replicas": 3}, "additional properties 'replicas'"),  # a typo at the top level
        ({"query": {"service": {"port": 70000}}}, "/query/service/port"),
        ({"fetcher": {"accounts": {"account-1.txt": "{}"}}}, "'account-1.txt' does not match"),
        ({"metrics": {"prometheusRule": {"errorRatio": 2}}}, "/metrics/prometheusRule/errorRatio"),
        ({"config": {"TRACKER_QUERY_PORT": "eighty"}}, "/config/TRACKER_QUERY_PORT"),
        ({"topologySpread": {"whenUnsatisfiable": "Maybe"}}, "/topologySpread/whenUnsatisfiable"),
        ({"worker": {"autoscaling": {"minReplicas": 0}}}, "/worker/autoscaling/minReplicas"),
        ({"health": {"pdb": {"enabled": "yes"}}}, "/health/pdb/enabled"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], where: str) -> None:
    helm = require_helm_sdkpy()
    with pytest.raises(helm.HelmError, match="schema") as raised:
        install(values)
    assert where in str(raised.value)


def test_default_install_runs_without_a_fetcher_and_says_how_to_enable_it(
    default_release: Release,
) -> None:
    """A default install must not wait on a Secret it does not make (pods stuck in
    ContainerCreating): the fetcher is opt-in, and the notes say how."""
    assert name_of("fetcher") not in {d["metadata"]["name"] for d in default_release.everything}
    assert "The fetcher is NOT enabled" in default_release.notes
    assert "fetcher.existingSecret" in default_release.notes
    assert "fetcher.accounts" in default_release.notes
    for deployment in default_release.of_kind("Deployment"):
        for volume in pod_spec(deployment)["volumes"]:
            assert "secret" not in volume, deployment["metadata"]["name"]


def test_every_component_has_a_disruption_budget_and_spreads_over_zones_and_nodes(
    override_release: Release,
) -> None:
    deployments = override_release.of_kind("Deployment")
    budgets = {p["metadata"]["name"]: p for p in override_release.of_kind("PodDisruptionBudget")}
    assert set(budgets) == {d["metadata"]["name"] for d in deployments}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"] == selector
        assert budgets[name]["spec"]["maxUnavailable"] == 1
        spread = pod_spec(deployment)["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in spread] == [
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        ]
        for constraint in spread:
            assert constraint["labelSelector"]["matchLabels"] == selector
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"


def test_autoscalers_scale_on_cpu_and_the_queue_lag_and_own_the_replica_count(
    default_release: Release, production_release: Release
) -> None:
    assert default_release.of_kind("HorizontalPodAutoscaler") == []
    scalers = {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in production_release.of_kind("HorizontalPodAutoscaler")
    }
    assert set(scalers) == {name_of(c) for c in ("collector", "worker", "fetcher")}
    for name, scaler in scalers.items():
        assert scaler["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        cpu = scaler["spec"]["metrics"][0]
        assert cpu["resource"]["name"] == "cpu"
        assert cpu["resource"]["target"]["averageUtilization"] == 70
        # the autoscaler owns the count: a replicas field would fight it on every upgrade
        assert "replicas" not in production_release.get("Deployment", name)["spec"]
    assert scalers[name_of("collector")]["spec"]["minReplicas"] == 2
    assert len(scalers[name_of("collector")]["spec"]["metrics"]) == 1
    for component, metric in (
        ("worker", "tracker_worker_lag_seconds"),
        ("fetcher", "tracker_fetch_queue_lag_seconds"),
    ):
        [lag] = scalers[name_of(component)]["spec"]["metrics"][1:]
        assert lag["type"] == "Pods"
        assert lag["pods"]["metric"]["name"] == metric
        assert metric in exported_metrics()
    assert production_release.get("Deployment", name_of("query"))["spec"]["replicas"] == 2


def test_network_policies_let_in_only_the_ports_each_component_serves(
    default_release: Release, production_release: Release
) -> None:
    expected = {
        "collector": {9000, HEALTH_PORT, 9464},
        "query": {8000, HEALTH_PORT, 9464},
        "health": {HEALTH_PORT, 9464},
        "worker": {HEALTH_PORT, 9464},
    }
    for release, components in (
        (default_release, expected),
        (production_release, {**expected, "fetcher": {HEALTH_PORT, 9464}}),
    ):
        policies = {p["metadata"]["name"]: p for p in release.of_kind("NetworkPolicy")}
        assert set(policies) == {name_of(c) for c in components}
        for component, ports in components.items():
            spec = policies[name_of(component)]["spec"]
            deployment = release.get("Deployment", name_of(component))
            assert (
                spec["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
            )
            assert {p["port"] for rule in spec["ingress"] for p in rule["ports"]} == ports
    default = default_release.get("NetworkPolicy", name_of("query"))["spec"]
    assert default["policyTypes"] == ["Ingress"]  # egress open unless rules are given
    assert all("from" not in rule for rule in default["ingress"])
    prod = production_release.get("NetworkPolicy", name_of("query"))["spec"]
    assert prod["policyTypes"] == ["Ingress", "Egress"]
    [grpc_rule, monitoring_rule] = prod["ingress"]
    assert grpc_rule["from"] == PRODUCTION_VALUES["networkPolicy"]["grpcFrom"]
    assert monitoring_rule["from"] == PRODUCTION_VALUES["networkPolicy"]["monitoringFrom"]
    assert {"port": 53, "protocol": "UDP"} in prod["egress"][0]["ports"]
    assert prod["egress"][1:] == PRODUCTION_VALUES["networkPolicy"]["egress"]


def exported_metrics() -> set[str]:
    """Every series name src/adapters/prometheus.py defines (counters with _total)."""
    text = (Path(__file__).resolve().parents[2] / "src" / "adapters" / "prometheus.py").read_text()
    return set(re.findall(r'"(tracker_[a-z_]+)"', text))


def test_monitoring_objects_use_the_metrics_the_code_exports(
    default_release: Release, production_release: Release
) -> None:
    assert not [o for o in default_release.everything if o["kind"] in PROMETHEUS_OPERATOR_KINDS]
    service = production_release.get("Service", f"{RELEASE}-tracker-metrics")
    assert service["spec"]["clusterIP"] == "None"
    # every pod of the release, the fetcher and the worker included (they have no Service)
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "tracker",
        "app.kubernetes.io/instance": RELEASE,
    }
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}
    ]
    [monitor] = production_release.of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"

    [rule] = production_release.of_kind("PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    alerts = {r["alert"] for r in rules}
    assert {
        "TrackerFetchQueueBehind",
        "TrackerFetchAccountBudgetExhausted",
        "TrackerWorkerBehind",
        "TrackerDependencyDown",
        "TrackerGrpcErrorRate",
        "TrackerFleetOutage",
        "TrackerWebhookDeadLetters",
    } <= alerts
    known = exported_metrics() | {"grpc_server_handled_total"}
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        assert r["annotations"]["summary"]
        used = {m for m in re.findall(r"\b([a-z_]+)\{", r["expr"])}
        assert used, r["expr"]
        assert used <= known, (r["alert"], used - known)
        assert f'namespace="{NAMESPACE}"' in r["expr"]  # this release's series only
        assert r["expr"].count("(") == r["expr"].count(")")
        assert "{{" not in r["expr"]  # Helm rendered it; only annotations keep $labels


# --- The alert rules through Prometheus' own checker -------------------------------------
# promtool comes with Debian's `prometheus` package (about 100 MB installed, so not in
# bootstrap): `apt-get install --no-install-recommends prometheus`. Where it is absent the
# two tests below skip and say so; the rules are still checked as text above.
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (apt-get install --no-install-recommends prometheus)",
)


def rule_file(release: Release, directory: Path) -> Path:
    """The rendered PrometheusRule's groups as a Prometheus rule file."""
    [rule] = release.of_kind("PrometheusRule")
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


@needs_promtool
def test_the_alert_rules_pass_promtool_check_rules(
    production_release: Release, tmp_path: Path
) -> None:
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(rule_file(production_release, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    [rule] = production_release.of_kind("PrometheusRule")
    count = sum(len(group["rules"]) for group in rule["spec"]["groups"])
    assert f"SUCCESS: {count} rules found" in checked.stdout


DEAD_LETTERS_DESCRIPTION = (
    "A client's receiver failed every attempt: tell the client, then "
    "WebhookService.RedeliverWebhookEvents once it answers again."
)


def series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f'{name}{{namespace="{NAMESPACE}",{labels}}}', "values": values}


@needs_promtool
def test_alerts_fire_when_promtool_replays_their_conditions(
    production_release: Release, tmp_path: Path
) -> None:
    """`promtool test rules`: a dependency down for 2 minutes, the worker 6 minutes behind
    for 10 minutes, a dead-lettered webhook delivery; and the same series short of each
    condition (no alert): the thresholds of values.yaml (for: 10m, workerLagSeconds: 300)."""
    tests = {
        "rule_files": [str(rule_file(production_release, tmp_path))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series(
                        "tracker_dependency_up", 'dependency="postgres",pod="q-1"', "1 1 0 0 0 0"
                    ),
                    series("tracker_dependency_up", 'dependency="redis",pod="q-1"', "1 1 1 1 0 1"),
                    series("tracker_worker_lag_seconds", 'pod="w-1"', "360x15"),
                    series("tracker_worker_lag_seconds", 'pod="w-2"', "10x15"),
                ],
                "alert_rule_test": [
                    # postgres down since minute 2: pending at 3, firing from 4 (for: 2m)
                    {"eval_time": "3m", "alertname": "TrackerDependencyDown", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "TrackerDependencyDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "dependency": "postgres"},
                                "exp_annotations": {
                                    "summary": "postgres does not answer the health checks",
                                    "description": (
                                        f"A process of {RELEASE} has seen postgres down for 2 "
                                        "minutes: its pods are NOT_SERVING (out of their "
                                        "Services)."
                                    ),
                                },
                            }
                        ],
                    },
                    # the worst worker is 360 s behind (> 300 s): firing once it held 10 minutes
                    {"eval_time": "9m", "alertname": "TrackerWorkerBehind", "exp_alerts": []},
                    {
                        "eval_time": "11m",
                        "alertname": "TrackerWorkerBehind",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {
                                    "summary": "New reports wait 6m 0s for processing",
                                    "description": (
                                        "Statuses and nearest cities lag behind the reports: "
                                        "add worker replicas."
                                    ),
                                },
                            }
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    series(
                        "tracker_webhook_deliveries_total",
                        'outcome="dead",pod="w-1"',
                        "0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
                    ),
                    series(
                        "tracker_webhook_deliveries_total",
                        'outcome="sent",pod="w-1"',
                        "0+10x21",
                    ),
                ],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "TrackerWebhookDeadLetters", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "TrackerWebhookDeadLetters",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": {
                                    "summary": (
                                        "Webhook deliveries gave up after their last attempt "
                                        "(EventQueryService.ListWebhookDeliveries, state DEAD)"
                                    ),
                                    "description": (DEAD_LETTERS_DESCRIPTION),
                                },
                            }
                        ],
                    },
                    # 15 minutes after the last dead letter the increase is 0 again
                    {
                        "eval_time": "20m",
                        "alertname": "TrackerWebhookDeadLetters",
                        "exp_alerts": [],
                    },
                ],
            },
        ],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests))
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
