"""The cluster files, offline: ray_cluster.yaml against Ray's own schema and config checks, the
Dockerfile's pins, and the KubeRay manifests' fields, images and job entrypoints."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml

from audiogan import __version__
from audiogan.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "ray_cluster.yaml"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"
KUBERAY = ROOT / "cluster" / "kuberay"
RAY_MINOR = ".".join(ray.__version__.split(".")[:2])


def _launcher_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _validate(config: dict) -> None:
    """Ray's schema (draft-07, shipped in the ray package), then Ray's own config checks after
    merging its AWS defaults (no network)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(copy.deepcopy(config)))


def _image_tag() -> str:
    """The tag the Dockerfile's build comment gives the image."""
    return re.search(r"docker build .* -t (\S+)", DOCKERFILE.read_text()).group(1)


def test_ray_cluster_yaml_passes_rays_schema_and_checks():
    _validate(_launcher_config())


@pytest.mark.parametrize(
    "spoil",
    [
        lambda c: c.update(typo_field=1),  # the schema allows no unknown top-level key
        lambda c: c["available_node_types"]["gpu_1x"]["resources"].update(GPU=0.5),
        lambda c: c.update(head_node_type="nonexistent"),
    ],
)
def test_the_validation_catches_a_broken_cluster_yaml(spoil):
    config = _launcher_config()
    spoil(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _validate(config)


def test_ray_cluster_yaml_keeps_training_off_the_head_and_scales_workers_from_zero():
    config = _launcher_config()
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = {name: node for name, node in nodes.items() if name != config["head_node_type"]}
    types = {node["node_config"]["InstanceType"] for node in workers.values()}
    assert types == {"m5.4xlarge", "g5.xlarge", "g5.12xlarge"}  # CPUs; one A10G; four A10Gs
    assert all(node["min_workers"] == 0 for node in workers.values())
    for node in nodes.values():  # S3 through the instance role, not keys
        assert "IamInstanceProfile" in node["node_config"]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert config["docker"]["image"].endswith("/" + _image_tag())  # in the user's registry
    assert not re.search(r"(?i)aws_(secret|access)|secret_key", CLUSTER_YAML.read_text())


def test_the_dockerfile_builds_on_the_pinned_ray_and_torch():
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+)-py311-gpu$", text, re.M)
    assert base and base.group(1).startswith(RAY_MINOR + ".")
    pyproject = (ROOT / "pyproject.toml").read_text()
    for pin in ('"torch==2.11.0"', '"torchaudio==2.11.0"'):
        assert pin in text and pin in pyproject
    assert _image_tag() == f"audiogan:{__version__}-ray{base.group(1)}-py311-gpu"


def _manifests() -> dict[str, dict]:
    return {path.name: yaml.safe_load(path.read_text()) for path in KUBERAY.glob("*.yaml")}


def test_the_raycluster_has_a_cpu_free_head_and_gpu_workers_on_the_image():
    manifests = _manifests()
    cluster = manifests["raycluster.yaml"]
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    spec = cluster["spec"]
    assert spec["rayVersion"].startswith(RAY_MINOR + ".")
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1
    pods = [spec["headGroupSpec"]["template"]["spec"], group["template"]["spec"]]
    for pod in pods:
        assert all(c["image"] == _image_tag() for c in pod["containers"])
    (worker,) = group["template"]["spec"]["containers"]
    for kind in ("requests", "limits"):
        assert worker["resources"][kind]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("name", ["rayjob-prepare.yaml", "rayjob-train.yaml", "rayjob-tune.yaml"])
def test_each_rayjob_runs_a_jobs_entrypoint_that_the_cli_accepts(name):
    manifests = _manifests()
    job = manifests[name]
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["clusterSelector"] == {
        "ray.io/cluster": manifests["raycluster.yaml"]["metadata"]["name"]
    }
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["python", "-m"] and words[2].startswith("jobs.")
    command = words[2].removeprefix("jobs.")
    assert (ROOT / "jobs" / f"{command}.py").exists()
    args = build_parser().parse_args([command, *words[3:]])  # exits on an unknown option
    assert args.command == command
    if getattr(args, "config", None):  # a built-in preset, as the installed package has it
        from audiogan.config import PRESETS_DIR, find_preset

        assert find_preset(args.config).parent == PRESETS_DIR
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/home/ray/audiogan"  # where the Dockerfile puts it


JOBS = {
    "prepare": ["prepare"],
    "train": ["train"],
    "tune": ["tune"],
    "generate": ["generate"],
    "serve": ["serve"],
    "evaluate": ["evaluate"],
    "compare": ["compare"],
    "bench_prepare": ["bench", "prepare"],
    "bench_train": ["bench", "train"],
    "bench_model": ["bench", "model"],
    "bench_step": ["bench", "step"],
}


def test_every_job_module_is_known_here():
    modules = {path.stem for path in (ROOT / "jobs").glob("*.py") if path.stem != "__init__"}
    assert modules == set(JOBS)


@pytest.mark.parametrize("module", sorted(JOBS))
def test_each_job_takes_exactly_the_arguments_of_its_command(module, monkeypatch, capsys):
    """`python -m jobs.X --help` is `audiogan X --help`: the same parser, so the same options."""
    import runpy

    from audiogan.cli import main

    with pytest.raises(SystemExit) as direct:
        main([*JOBS[module], "--help"])
    expected = capsys.readouterr().out
    monkeypatch.setattr("sys.argv", [f"jobs/{module}.py", "--help"])
    with pytest.raises(SystemExit) as as_job:
        runpy.run_module(f"jobs.{module}", run_name="__main__")
    assert (as_job.value.code, direct.value.code) == (0, 0)
    assert capsys.readouterr().out == expected
    assert expected.startswith(f"usage: audiogan {' '.join(JOBS[module])}")  # a real help text


def test_every_job_command_in_the_docs_parses():
    """The `python -m jobs.X ...` commands of README.md and docs/ are accepted by the parser
    they reach."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages).replace("\\\n", " ")
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    commands = re.findall(r"python -m jobs\.(\w+)([^\n]*)", blocks)
    assert len(commands) >= 10
    for module, rest in commands:
        words = shlex.split(rest, comments=True)
        args = build_parser().parse_args([*JOBS[module], *words])  # exits on a bad option
        assert args.command == JOBS[module][0]
