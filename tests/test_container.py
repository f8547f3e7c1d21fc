"""The container: the Dockerfile's install replayed from a clean virtual environment, and the deploy examples.

No Docker engine runs here; scripts/check-container-install reads the
Dockerfile and replays its steps (pip installs from the package index).
"""

from __future__ import annotations

import shlex
import subprocess
import sys

import yaml
from conftest import REPO

from connector.schedule import Schedule


def instructions() -> list[tuple[str, str]]:
    lines, pending = [], ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        pending += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            lines.append((word, rest))
            pending = ""
    return lines


def test_the_dockerfiles_install_steps_work_from_a_clean_venv_and_answer_help():
    result = subprocess.run([sys.executable, str(REPO / "scripts/check-container-install")], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for command in ("healthsync --help", "healthsync run --help", "healthsync schedule --help", "healthsync validate"):
        assert f"$ {command}  -> exit 0" in result.stdout
    assert "Usage: healthsync run [OPTIONS]" in result.stdout
    for module in ("trustme", "sandbox"):  # the API sandbox and its extra stay out of the image
        assert f"$ python -c 'import {module}'  -> ModuleNotFoundError" in result.stdout
    assert "$ healthsync demo  -> exit 2" in result.stdout and "healthsync[sandbox]" in result.stdout
    assert "ok: the Dockerfile's install answers from a clean virtual environment" in result.stdout


def test_the_image_runs_as_a_non_root_user_with_state_on_a_volume_and_the_schedule_by_default():
    steps = instructions()
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]
    words = dict(final)
    assert words["FROM"].startswith("python:3.11-slim")
    assert words["USER"].split(":")[0] not in ("0", "root")
    assert words["VOLUME"] == "/var/lib/healthsync"
    env = dict(pair.split("=", 1) for pair in shlex.split(words["ENV"]))
    assert env["HEALTHSYNC_DB"].startswith("/var/lib/healthsync/")
    Schedule.parse(env["HEALTHSYNC_CRON"])
    assert words["ENTRYPOINT"] == '["healthsync"]' and words["CMD"] == '["schedule"]'
    installs = [rest for word, rest in steps if word == "RUN" and "pip install" in rest]
    assert installs and all("[" not in r and "pytest" not in r and "trustme" not in r for r in installs)  # no extras
    copied = [source for word, rest in steps if word == "COPY" and not rest.startswith("--from")
              for source in shlex.split(rest)[:-1]]
    assert "connector/" in copied and not any(s.rstrip("/").split("/")[0] in ("sandbox", ".") for s in copied)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") + 1:][:5] == ["!pyproject.toml", "!README.md", "!connector/", "!mappings/",
                                                   "**/__pycache__"]
    readme = (REPO / "README.md").read_text()
    assert "docker build -t healthsync ." in readme and "/var/lib/healthsync" in readme


def test_the_kubernetes_cronjob_runs_one_run_at_a_time_with_secrets_from_a_secret():
    docs = {d["kind"]: d for d in yaml.safe_load_all((REPO / "deploy/kubernetes/cronjob.yaml").read_text())}
    job = docs["CronJob"]["spec"]
    Schedule.parse(job["schedule"])
    assert job["concurrencyPolicy"] == "Forbid"
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["run"]
    assert container["envFrom"][0]["secretRef"]["name"] == docs["Secret"]["metadata"]["name"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claim = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claim[mounts["/var/lib/healthsync"]] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["terminationGracePeriodSeconds"] >= 60


def test_the_compose_example_runs_the_schedule_with_state_on_a_named_volume():
    compose = yaml.safe_load((REPO / "deploy/docker-compose.yml").read_text())
    service = compose["services"]["healthsync"]
    assert service["command"][0] == "schedule"
    Schedule.parse(service["environment"]["HEALTHSYNC_CRON"])
    volume, path = service["volumes"][0].split(":")
    assert path == "/var/lib/healthsync" and volume in compose["volumes"]
    assert (REPO / "deploy" / f"{service['env_file']}.example").is_file()
