"""What importing audiogan does to a process: nothing it did not ask for. Each check runs in a
fresh interpreter, so what an earlier test imported cannot hide what an import does."""

import json
import subprocess
import sys

# The modules that import Ray when imported (the others that use it, such as cli, connect,
# tune and bench, import it where they start it). Every other module of audiogan must import
# without Ray: the contracts (dataset, runfolder), the pure core, evaluation, generation and
# the commands, so that `audiogan --help` starts no Ray. A module that starts importing Ray
# drags Ray's start-up and its global state into every notebook, evaluation and unit test that
# imports it, so a new module is Ray-free unless listed here.
RAY_SIDE = {"audiogan.compare", "audiogan.data", "audiogan.schedulers", "audiogan.train"}

# Imports every module of audiogan and jobs, and prints what differs from before. What it
# compares is process-wide state a library has no business changing when it is imported:
# the environment, the working directory, torch's threads, defaults and cuDNN flags,
# matplotlib's backend (and whether pyplot, with its global figure list, got imported), the
# root logger, and whether Ray was started. Ray is imported before the first look, so what
# its own import does is not counted against audiogan.
_PROBE = r"""
import importlib, json, logging, os, pkgutil, sys
import matplotlib, torch
import ray  # what importing Ray itself does (it sets RAY_CLIENT_MODE) is Ray's, not ours

def state():
    return {
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "torch_threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
        "torch_default_dtype": str(torch.get_default_dtype()),
        "torch_deterministic": torch.are_deterministic_algorithms_enabled(),
        "cudnn": [torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic],
        "matmul_precision": torch.get_float32_matmul_precision(),
        "mpl_backend": str(dict.__getitem__(matplotlib.rcParams, "backend")),
        "pyplot": "matplotlib.pyplot" in sys.modules,
        "root_logger": [logging.getLogger().level, len(logging.getLogger().handlers)],
    }

before = state()
import audiogan, jobs
names = []
for package in (audiogan, jobs):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
after = state()
print(json.dumps({
    "modules": names,
    "changed": {key: [before[key], after[key]] for key in before if before[key] != after[key]},
    "ray_started": ray.is_initialized(),
}))
"""


def test_importing_every_module_changes_no_process_wide_state():
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout
    found = json.loads(out.splitlines()[-1])
    # The walk reached the leaves, so an empty diff means something.
    assert {"audiogan.models.ddsp", "audiogan.synth.speech", "audiogan.cli", "jobs.train"} <= set(
        found["modules"]
    )
    assert found["changed"] == {}
    assert not found["ray_started"]


# Imports every module not in RAY_SIDE in one interpreter, in order, and names the first one
# after which Ray is loaded (imports add up, so that one brought it).
_RAY_FREE_PROBE = r"""
import importlib, json, pkgutil, sys
import audiogan
ray_side = set(json.loads(sys.argv[1]))
checked = []
for info in pkgutil.walk_packages(audiogan.__path__, "audiogan."):
    if info.name in ray_side or any(info.name.startswith(p + ".") for p in ray_side):
        continue
    importlib.import_module(info.name)
    checked.append(info.name)
    if "ray" in sys.modules:
        break
print(json.dumps({"checked": checked, "ray": "ray" in sys.modules}))
"""


def test_every_module_but_the_ray_side_imports_without_ray():
    out = subprocess.run(
        [sys.executable, "-c", _RAY_FREE_PROBE, json.dumps(sorted(RAY_SIDE))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = json.loads(out.splitlines()[-1])
    assert not found["ray"], f"importing {found['checked'][-1]} imports Ray"
    # The walk reached the modules that matter most.
    expected = {"audiogan.dataset", "audiogan.evaluator", "audiogan.evaluate", "audiogan.step"}
    assert expected <= set(found["checked"])
