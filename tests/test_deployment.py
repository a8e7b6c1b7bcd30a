"""docker-compose.yml cannot run here (no Docker engine); this keeps it honest: its services
exist, their commands name this project's entry points, every variable it sets is one the
settings read, and the GPU worker asks for a GPU and serves the gpu queue."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_compose_file_matches_the_project():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "redis", "web", "beat", "worker-cpu", "worker-gpu"}
    settings_source = (REPO / "config" / "settings.py").read_text()
    for name in ("web", "beat", "worker-cpu", "worker-gpu"):
        for variable in services[name]["environment"]:
            assert f'"{variable}"' in settings_source, f"{name} sets {variable}, which settings never read"
    assert "config.wsgi" in " ".join(services["web"]["command"])
    assert services["worker-cpu"]["command"][:4] == ["celery", "-A", "config", "worker"]
    gpu = services["worker-gpu"]
    assert "gpu" in gpu["command"][gpu["command"].index("-Q") + 1].split(",")
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    dockerfile = (REPO / "Dockerfile").read_text()
    for folder in ("config", "annotate", "training", "rewards", "templates", "static"):
        assert f"COPY {folder} {folder}" in dockerfile
