"""audiogan as a wheel installs it (cluster/Dockerfile runs `pip install .`): built from this
checkout, installed into a fresh folder, and run from outside the checkout, where only what the
wheel holds is there. The presets must be in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A folder holding the installed wheel (no dependencies: they are this venv's)."""
    wheels = tmp_path_factory.mktemp("wheels")
    # No build isolation: the tests run offline, so the build uses this venv's setuptools.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, cwd=wheels,
    )  # fmt: skip
    (wheel,) = wheels.glob("audiogan-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "audiogan/presets/ddsp_stft_cond.yaml" in names
    assert not any(name.startswith(("tests/", "jobs/configs/")) for name in names)
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    return target


def _run(target: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_the_installed_command_runs_and_finds_its_presets(installed, tmp_path):
    found = _run(
        installed,
        [sys.executable, "-c",
         "import json, audiogan; from audiogan import config; "
         "print(json.dumps([audiogan.__file__, str(config.find_preset('wavegan')), "
         "config.load_config(config.TrainConfig, 'ddsp_stft_cond').model, "
         "str(config.default_preset(False, {'counts': {'per_label': {'a': 1, 'b': 1}, "
         "'unlabelled': 0}})[0]), config.preset_names()]))"],
        cwd=tmp_path,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    module, wavegan, model, default, names = json.loads(found.stdout)
    # The wheel's copy, not the checkout's.
    assert module.startswith(str(installed)) and wavegan.startswith(str(installed))
    assert Path(wavegan).is_file() and Path(default).is_file()
    assert model == "ddsp"
    assert {"wavegan", "small_cpu", "sweep_small", "ddsp_stft_gpu"} <= set(names)

    script = installed / "bin" / "audiogan"
    helped = _run(installed, [str(script), "train", "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--config" in helped.stdout and "ddsp-stft-cond" in helped.stdout


def test_the_installed_command_names_the_presets_it_has(installed, tmp_path):
    data = tmp_path / "no-dataset"
    failed = _run(
        installed,
        [str(installed / "bin" / "audiogan"), "train", "--config", "no_such_preset",
         "--data", str(data), "--storage", str(tmp_path), "--name", "x"],
        cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 2
    assert "no built-in preset of that name" in failed.stderr and "small_cpu" in failed.stderr
