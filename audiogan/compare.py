"""`audiogan compare`: training recipes side by side, on the same data, budget and yardstick.

Each recipe (a built-in training preset, audiogan/presets/) trains from scratch for the same
number of minutes on the same Ray Train workers (its preset, with `max_minutes` as the budget),
or for the same number of G steps (`max_steps`: what each recipe makes of a step), then
`evaluate` scores its EMA generator (or G) with the same evaluation classifier against the
same real held-out clips. The table puts every recipe beside the textbook WaveGAN-GP (the
reference) and the 2019 baseline, and says whether the best recipe meets the quality targets.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from audiogan import data, evaluate, evaluator, storage, synth, train
from audiogan.config import (
    PRESETS_DIR,
    RECIPES,
    SUITE_CLIPS_PER_CLASS,
    ConfigError,
    PrepareConfig,
    TrainConfig,
    from_dict,
    load_config,
    to_dict,
)
from audiogan.dataset import MANIFEST
from audiogan.errors import AudioganError

RESULT = "compare.json"
SUITE_RESULT = "suite.json"
DEFAULT_RECIPES = tuple(RECIPES)
REFERENCE = "wavegan-gp"
BASELINE = "dcgan"
# The targets the best recipe is held to: an Inception Score of at least this share of real
# data's, and a classifier FD of at most this share of the reference's.
TARGET_IS_RATIO = 0.3
TARGET_FD_SHARE = 0.25
# Over the suite of kinds, every kind is held to more (issue 18's targets for the default).
SUITE_TARGET_IS_RATIO = 0.6
SUITE_TARGET_FD_SHARE = 0.2
# How each kind of the suite is made: SUITE_CLIPS_PER_CLASS files a class (audiogan/config.py)
# cut into one-second clips.
SUITE_SEED = 3
SUITE_PREPARE = PrepareConfig(clip_seconds=1.0, crop="windows")


def recipe_preset(recipe: str) -> Path:
    """The preset of a recipe name, or a YAML file given by its path."""
    if recipe in RECIPES:
        return PRESETS_DIR / RECIPES[recipe][0]
    if recipe.endswith((".yaml", ".yml")) and Path(recipe).is_file():
        return Path(recipe)
    raise AudioganError(
        f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)} (or a path to a YAML preset)"
    )


def recipe_name(recipe: str) -> str:
    """A recipe's name in run names and the table: a preset path's file name without .yaml."""
    if recipe in RECIPES:
        return recipe
    name = Path(recipe).stem
    if name in RECIPES:
        raise AudioganError(f"{recipe} would be named {name}, a built-in recipe's name; rename it")
    return name


def recipe_configs(
    recipes: tuple[str, ...], minutes: float, overrides: dict | None = None, steps: int = 0
) -> dict[str, tuple[Path, TrainConfig]]:
    """name -> (preset, training config with the budget: `steps` G steps if > 0, else `minutes`)
    for each recipe; refuses unknown recipes and keys, bad values and a recipe named twice,
    before anything starts."""
    if steps < 0:
        raise AudioganError("--steps must be positive")
    if not steps and minutes <= 0:
        raise AudioganError("--minutes must be positive")
    if not recipes:
        raise AudioganError("--recipes names no recipe")
    for key in ("max_minutes", "max_steps"):
        if key in (overrides or {}):
            raise AudioganError(f"{key} is set by the budget: give --minutes or --steps instead")
    budget = (
        {"max_steps": steps, "max_minutes": 0.0}
        if steps
        else {"max_minutes": float(minutes), "max_steps": 10**7}
    )
    configs = {}
    for recipe in recipes:
        preset = recipe_preset(recipe)
        cfg = load_config(TrainConfig, str(preset), (overrides or {}) | budget)
        configs[recipe_name(recipe)] = (preset, cfg)
    if len(configs) < len(recipes):
        raise AudioganError("--recipes names a recipe twice")
    return configs


def budget_text(minutes: float | None, steps: int | None) -> str:
    """The budget in words: '500 G steps' or '20.0 min'."""
    return f"{steps} G steps" if steps else f"{minutes} min"


def compare(
    data_url: str,
    storage_url: str,
    minutes: float,
    workers: int = 2,
    recipes: tuple[str, ...] = DEFAULT_RECIPES,
    n: int = 256,
    overwrite: bool = False,
    overrides: dict | None = None,
    log: Callable[[str], None] = print,
    resume: bool = False,
    steps: int = 0,
) -> dict:
    """Trains and scores each recipe, for `steps` G steps each if > 0, else for `minutes`;
    `overrides` are training keys set for every recipe (`audiogan compare ...
    batch_size=16`), the budget's max_minutes and max_steps excepted. With `resume`,
    a recipe that STORAGE/compare.json holds, measured on the same terms, is kept as it was
    (so a long comparison can be run in parts); the others train from scratch."""
    # Everything that could fail after the training is checked before it.
    configs = recipe_configs(recipes, minutes, overrides, steps)
    _check_options(workers, n)
    terms = compare_terms(data_url, minutes, workers, overrides, n, steps)
    before = measured_before(storage_url, terms) if resume else {}
    kept = {
        name: row for name, row in before.get("recipes", {}).items()
        if _same_recipe(name, row, configs, log)
    }  # fmt: skip
    to_train = [name for name in configs if name not in kept]
    _check_runs(storage_url, to_train, overwrite or resume)
    fs, root = storage.resolve(storage_url)
    for name in to_train:
        # --overwrite, --resume (a run cut short would not get the same budget), or nothing
        storage.delete(fs, storage.join(root, f"compare-{name}"))

    clips = evaluator.read_labelled_clips(data_url)  # once, for the check and every evaluation
    accuracy, yardstick = _evaluation_classifier(data_url, clips, log)
    check_yardstick(storage_url, before, kept, accuracy, yardstick, log)
    # The recipes in --recipes order, then any measured before and not named this time; the
    # kept ones are in every write, so a failure now loses none of them either.
    order = [*configs, *(name for name in kept if name not in configs)]
    result: dict = terms | {"classifier_held_out_accuracy": accuracy, "recipes": {}}
    for name in kept:
        log(f"compare: {name} was measured before on the same terms; kept (--resume)")

    measured = dict(kept)

    def in_order() -> dict:
        return {name: measured[name] for name in order if name in measured}

    for name, (preset, cfg) in configs.items():
        if name in kept:
            continue
        budget = budget_text(minutes, steps)
        log(f"compare: training {name} ({preset.name}) for {budget} on {workers} worker(s)")
        spec = train.RunSpec(data_url, storage_url, f"compare-{name}", workers, gpu=False)
        summary = train.train(cfg, spec)
        if summary["error"]:
            raise AudioganError(f"training {name} failed: {summary['error']}")
        scores = evaluate.evaluate(
            data_url, checkpoint_url=summary["checkpoint"], n=n, log=log, clips=clips
        )
        measured[name] = _row(name, preset, cfg, summary, scores, yardstick)
        result["recipes"] = in_order()
        _write(fs, root, result)  # a later recipe's failure loses nothing already measured
    result["recipes"] = in_order()
    result |= _verdict(result["recipes"])
    _write(fs, root, result)
    return result


def _evaluation_classifier(
    data_url: str, clips: evaluator.LabelledClips, log: Callable[[str], None]
) -> tuple[float, str]:
    """(held-out accuracy, fingerprint) of the dataset's evaluation classifier, fitted first if
    it has none; refuses one fitted on another dataset before any recipe trains."""
    classifier_url = storage.join(data_url, evaluator.DEFAULT_DIR)
    if storage.exists(*storage.resolve(storage.join(classifier_url, evaluator.STATE_FILE))):
        log(f"compare: using the evaluation classifier at {storage.display(classifier_url)}")
    else:
        log("compare: fitting the evaluation classifier ...")
        evaluator.fit(data_url, log=log)
    classifier, about = evaluator.load(classifier_url)
    evaluate.check_classifier(about, clips, classifier_url)
    return about["held_out_accuracy"], evaluator.fingerprint(classifier)


def _row(
    name: str, preset: Path, cfg: TrainConfig, summary: dict, scores: dict, yardstick: str
) -> dict:
    """A recipe's row of compare.json from its training summary and its scores; the
    classifier's fingerprint lets --resume tell whether a later run scores it alike."""
    return {
        "preset": preset.name,
        "about": RECIPES[name][1] if name in RECIPES else "",
        "config": to_dict(cfg),
        "steps": summary["steps"],
        "samples_per_s": summary["samples_per_s"],
        "checkpoint": summary["checkpoint"],
        "metrics": scores["metrics"],
        "diagnostics": scores["diagnostics"],
        "predicted_labels": scores["predicted_labels"],
        "clips": scores["generated_clips"],
        "classifier_fingerprint": yardstick,
    }


# What a row of compare.json depends on besides its recipe, under the options that set it.
TERMS = {
    "data": "--data",
    "budget_minutes": "--minutes",
    "budget_steps": "--steps",
    "workers": "--workers",
    "overrides": "key=value settings",
    "n": "--n",
}


def compare_terms(
    data_url: str, minutes: float, workers: int, overrides, n: int, steps: int = 0
) -> dict:
    """The terms compare.json records (TERMS), which --resume holds the old rows to. One budget
    is set, the other None (a compare.json from before --steps has no budget_steps: None)."""
    budget = (None, steps) if steps else (minutes, None)
    values = (storage.display(data_url), *budget, workers, overrides or {}, n)
    return dict(zip(TERMS, values, strict=True))


def measured_before(storage_url: str, terms: dict) -> dict:
    """STORAGE/compare.json ({} if it is not there); refuses one measured on other terms
    (TERMS), whose rows cannot share a table with new ones, and one that is not readable."""
    fs, root = storage.resolve(storage_url)
    path = storage.join(root, RESULT)
    shown = f"{storage.display(storage_url)}/{RESULT}"
    if not storage.exists(fs, path):
        return {}
    try:
        before = json.loads(storage.read_bytes(fs, path))
    except ValueError:
        before = None
    if not isinstance(before, dict) or not isinstance(before.get("recipes"), dict):
        raise AudioganError(f"{shown} is not a compare result; move it away, or use --overwrite")
    before.setdefault("budget_steps", None)  # written before --steps: a minutes budget
    differs = [key for key in TERMS if before.get(key) != terms[key]]
    if differs:
        said = ", ".join(
            f"{TERMS[key]} {_term(before[key])} (now {_term(terms[key])})" if key in before
            else f"{TERMS[key]} not recorded (written before --resume)"
            for key in differs
        )  # fmt: skip
        raise AudioganError(
            f"{shown} was measured with {said}; --resume needs the same, or use --overwrite "
            "to start again"
        )
    return before


def _term(value) -> str:
    return "unset" if value is None else repr(value)


def check_yardstick(
    storage_url: str,
    before: dict,
    kept: dict,
    accuracy: float,
    yardstick: str,
    log: Callable[[str], None] = print,
) -> None:
    """Refuses to keep rows scored by another evaluation classifier than the one that will
    score the new rows: another held-out accuracy, or (for rows that recorded it) other
    weights. A row recorded before compare kept the classifier's fingerprint is kept on its
    accuracy alone, and the log says so."""
    shown = f"{storage.display(storage_url)}/{RESULT}"
    if kept and before.get("classifier_held_out_accuracy") != accuracy:
        raise AudioganError(
            f"{shown} was scored by another evaluation classifier (held-out accuracy "
            f"{before.get('classifier_held_out_accuracy')}, now {accuracy}): its rows and new "
            "ones would not share a yardstick (use --overwrite)"
        )
    for name, row in kept.items():
        recorded = row.get("classifier_fingerprint")
        if recorded is None:
            log(
                f"compare: {name} was scored before compare recorded the classifier's "
                "fingerprint; kept on its held-out accuracy, which is the same"
            )
        elif recorded != yardstick:
            raise AudioganError(
                f"{shown}: {name} was scored by another evaluation classifier (fingerprint "
                f"{recorded}, now {yardstick}; the same held-out accuracy): its row and new "
                "ones would not share a yardstick (use --overwrite)"
            )


def _same_recipe(name: str, row: dict, configs: dict, log: Callable[[str], None]) -> bool:
    """Whether a row measured before still stands for recipe `name`: yes unless the recipe
    is named now and its training config is no longer the one recorded (a preset edited
    since), in which case it trains again. A key added to TrainConfig since, at its default,
    changes nothing."""
    if name not in configs or "config" not in row:
        return True
    try:
        recorded = from_dict(TrainConfig, row["config"])
    except ConfigError:  # a key TrainConfig no longer has, or a value it no longer takes
        recorded = None
    if recorded == configs[name][1]:
        return True
    log(f"compare: {name}'s preset changed since it was measured; it trains again")
    return False


def _check_options(workers: int, n: int) -> None:
    if workers < 0:
        raise AudioganError("--workers must be 0 (in-process) or more")
    if n < 2:
        raise AudioganError("--n must be at least 2")


def _check_runs(storage_url: str, names, overwrite: bool) -> None:
    """Without overwrite, refuses a recipe whose run folder STORAGE/compare-NAME is already
    there (a resumed run would not get the same budget)."""
    fs, root = storage.resolve(storage_url)
    for name in names:
        if not overwrite and storage.is_nonempty_dir(fs, storage.join(root, f"compare-{name}")):
            raise AudioganError(
                f"{storage.display(storage_url)}/compare-{name} exists; a resumed run would "
                "not get the same budget (use --overwrite to start again)"
            )


def _verdict(rows: dict[str, dict]) -> dict:
    """The best recipe (lowest classifier FD, neither the baseline nor the reference) and
    whether it meets the targets against the reference."""

    def fd(name: str) -> float:
        return rows[name]["metrics"]["classifier_fd"]["generated"]

    candidates = [name for name in rows if name not in (BASELINE, REFERENCE)]
    if not candidates:
        return {}
    best = min(candidates, key=fd)
    is_ratio = rows[best]["metrics"]["inception_score"]["ratio"]
    verdict: dict = {
        "best": best,
        "targets_met": {
            "inception_score_ratio": is_ratio is not None and is_ratio >= TARGET_IS_RATIO
        },
    }
    if REFERENCE in rows:
        share = _ratio(fd(best), fd(REFERENCE))
        verdict["classifier_fd_vs_reference"] = share
        verdict["targets_met"]["classifier_fd_vs_reference"] = (
            share is not None and share <= TARGET_FD_SHARE
        )
    return verdict


def _write(fs, root: str, result: dict) -> None:
    storage.write_bytes(
        fs, storage.join(root, RESULT), json.dumps(result, indent=2, sort_keys=True).encode()
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def format_table(result: dict) -> list[str]:
    rows = result["recipes"]
    reference_fd = (
        rows[REFERENCE]["metrics"]["classifier_fd"]["generated"] if REFERENCE in rows else None
    )
    lines = [
        f"compare: {budget_text(result['budget_minutes'], result.get('budget_steps'))} of "
        f"training each on {result['workers']} CPU "
        f"worker(s), data {result['data']}; classifier held-out accuracy "
        f"{result['classifier_held_out_accuracy']}",
        "",
        "| recipe | G steps | mel_fd (real) | classifier FD (real) | FD / wavegan-gp's "
        "| Inception Score (real) | IS ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        m = row["metrics"]
        cfd = m["classifier_fd"]["generated"]
        lines.append(
            f"| {name} | {row['steps']} | {m['mel_fd']['generated']} ({m['mel_fd']['real']}) "
            f"| {cfd} ({m['classifier_fd']['real']}) | {_ratio(cfd, reference_fd)} "
            f"| {m['inception_score']['generated']} ({m['inception_score']['real']}) "
            f"| {m['inception_score']['ratio']} |"
        )
    if "best" in result:
        best, met = result["best"], result["targets_met"]
        is_ratio = rows[best]["metrics"]["inception_score"]["ratio"]
        lines += [
            "",
            f"best recipe: {best} (lowest classifier FD)",
            f"  Inception Score ratio {is_ratio} (target >= {TARGET_IS_RATIO}: "
            f"{'met' if met['inception_score_ratio'] else 'missed'})",
        ]
        if "classifier_fd_vs_reference" in result:
            lines.append(
                f"  classifier FD / {REFERENCE}'s {result['classifier_fd_vs_reference']} "
                f"(target <= {TARGET_FD_SHARE}: "
                f"{'met' if met['classifier_fd_vs_reference'] else 'missed'})"
            )
    return lines


# ---------------------------------------------------------------------------------------------
# over the suite of kinds


def suite_kinds(names: str) -> tuple[str, ...]:
    """`all` or comma-separated kind names -> kinds, refusing unknown ones and repeats."""
    kinds = tuple(synth.KINDS) if names == "all" else tuple(k.strip() for k in names.split(","))
    unknown = [k for k in kinds if k not in synth.KINDS]
    if unknown or not kinds:
        raise AudioganError(
            f"--kinds: unknown kind {', '.join(unknown) or '(none)'}; known: "
            f"{', '.join(synth.KINDS)} (or all)"
        )
    if len(set(kinds)) < len(kinds):
        raise AudioganError("--kinds names a kind twice")
    return kinds


def kind_prepared(suite_dir: str, kind: str) -> str:
    """Where a kind's prepared dataset is kept: SUITE_DIR/KIND/prepared."""
    return os.path.join(suite_dir, kind, "prepared")


def kind_dataset(
    suite_dir: str,
    kind: str,
    clips_per_class: int = SUITE_CLIPS_PER_CLASS,
    log: Callable[[str], None] = print,
) -> str:
    """SUITE_DIR/KIND/prepared, synthesised (SUITE_DIR/KIND/raw) and prepared first unless a
    finished one of the same clips_per_class is there (SUITE_DIR/KIND/made.json says); the
    same files for the same clips_per_class everywhere (SUITE_SEED). A local folder."""
    root = os.path.join(suite_dir, kind)
    prepared, made = kind_prepared(suite_dir, kind), os.path.join(root, "made.json")
    recipe = {"kind": kind, "clips_per_class": clips_per_class, "seed": SUITE_SEED}
    if os.path.exists(made) and os.path.exists(os.path.join(prepared, MANIFEST)):
        with open(made) as handle:
            before = json.load(handle)
        if before == recipe:
            return prepared
        raise AudioganError(
            f"{root} was made with {before.get('clips_per_class')} clips a class; give "
            f"--clips-per-class {before.get('clips_per_class')}, or remove {root}"
        )
    log(f"compare: synthesising {clips_per_class} {kind} clips a class into {root}/raw")
    if os.path.exists(root):
        shutil.rmtree(root)  # a half-made kind: its raw files, clips or classifier are not these
    synth.synthesize(os.path.join(root, "raw"), clips_per_class, SUITE_SEED, kind=kind)
    data.prepare(os.path.join(root, "raw"), prepared, SUITE_PREPARE, log=log)
    with open(made, "w") as handle:
        json.dump(recipe, handle)
    return prepared


def compare_kinds(
    suite_dir: str,
    storage_url: str,
    minutes: float,
    kinds: tuple[str, ...],
    workers: int = 2,
    recipes: tuple[str, ...] = DEFAULT_RECIPES,
    n: int = 256,
    overwrite: bool = False,
    overrides: dict | None = None,
    clips_per_class: int = SUITE_CLIPS_PER_CLASS,
    log: Callable[[str], None] = print,
    resume: bool = False,
    steps: int = 0,
) -> dict:
    """`compare` on each kind of the suite (its own dataset and evaluation classifier, its
    runs in STORAGE/KIND/), then a summary over kinds. STORAGE/suite.json is rewritten after
    every kind, so a later kind's failure loses nothing already measured; with `resume`, each
    kind keeps the recipes it measured before on the same terms."""
    # Everything that could stop a later kind is checked before the first one trains.
    names = recipe_configs(recipes, minutes, overrides, steps)
    _check_options(workers, n)
    for kind in kinds:
        runs = storage.join(storage_url, kind)
        _check_runs(runs, names, overwrite or resume)
        if resume:
            dataset = kind_prepared(suite_dir, kind)
            measured_before(runs, compare_terms(dataset, minutes, workers, overrides, n, steps))
    fs, root = storage.resolve(storage_url)
    budget_minutes, budget_steps = (None, steps) if steps else (minutes, None)
    result: dict = {
        "budget_minutes": budget_minutes, "budget_steps": budget_steps, "workers": workers,
        "kinds": {},
    }  # fmt: skip
    for kind in kinds:
        dataset = kind_dataset(suite_dir, kind, clips_per_class, log)
        log(f"compare: kind {kind} ({dataset})")
        result["kinds"][kind] = compare(
            dataset, storage.join(storage_url, kind), minutes, workers, recipes, n, overwrite,
            overrides, log, resume, steps,
        )  # fmt: skip
        result["summary"] = summarise_kinds(result["kinds"])
        storage.write_bytes(
            fs, storage.join(root, SUITE_RESULT),
            json.dumps(result, indent=2, sort_keys=True).encode(),
        )  # fmt: skip
    return result


def summarise_kinds(by_kind: dict[str, dict]) -> dict:
    """Per recipe: each kind's Inception Score ratio and classifier FD share of the
    reference's, their geometric means over the kinds it was measured on, and whether every
    kind meets the suite's targets (a recipe missing from a kind has not met them); `best`:
    the recipe (neither baseline nor reference) measured on every kind with the lowest mean
    FD share."""
    recipes: dict[str, dict] = {}
    for kind, result in by_kind.items():
        rows = result["recipes"]
        reference = rows.get(REFERENCE, {}).get("metrics", {}).get("classifier_fd", {})
        for name, row in rows.items():
            m = row["metrics"]
            share = _ratio(m["classifier_fd"]["generated"], reference.get("generated"))
            entry = recipes.setdefault(name, {"is_ratio": {}, "fd_share": {}})
            entry["is_ratio"][kind] = m["inception_score"]["ratio"]
            entry["fd_share"][kind] = share
    for entry in recipes.values():
        for key in ("is_ratio", "fd_share"):
            values = list(entry[key].values())
            entry[f"mean_{key}"] = _geometric_mean(values)
        entry["targets_met_on_every_kind"] = all(  # every kind of the suite, not only its own
            (entry["is_ratio"].get(k) or 0) >= SUITE_TARGET_IS_RATIO
            and entry["fd_share"].get(k) is not None
            and entry["fd_share"][k] <= SUITE_TARGET_FD_SHARE
            for k in by_kind
        )
    candidates = [
        name for name, entry in recipes.items()
        if name not in (BASELINE, REFERENCE) and entry["mean_fd_share"] is not None
        and entry["fd_share"].keys() == by_kind.keys()  # one good kind is no mean over all
    ]  # fmt: skip
    best = min(candidates, key=lambda name: recipes[name]["mean_fd_share"], default=None)
    return {"recipes": recipes, "best": best}


def _geometric_mean(values: list) -> float | None:
    if not values or any(v is None or v <= 0 for v in values):
        return None
    return round(math.exp(sum(math.log(v) for v in values) / len(values)), 4)


def format_kinds(result: dict) -> list[str]:
    """One table per kind (format_table's), then the summary: a recipe per row, a kind per
    column, each cell 'FD share / IS ratio'."""
    lines = []
    for kind, by_kind in result["kinds"].items():
        lines += [f"## {kind}", "", *format_table(by_kind), ""]
    summary = result.get("summary")
    if not summary:
        return lines
    kinds = list(result["kinds"])
    lines += [
        f"## over {len(kinds)} kinds: classifier FD / {REFERENCE}'s, then Inception Score ratio "
        f"(targets on every kind: <= {SUITE_TARGET_FD_SHARE}, >= {SUITE_TARGET_IS_RATIO})",
        "",
        "| recipe | " + " | ".join(kinds) + " | geometric mean | every kind |",
        "|---|" + "---:|" * len(kinds) + "---:|---|",
    ]
    for name, entry in summary["recipes"].items():
        cells = [
            f"{entry['fd_share'][k]} / {entry['is_ratio'][k]}" if k in entry["is_ratio"]
            else "not run"
            for k in kinds
        ]  # fmt: skip
        lines.append(
            f"| {name} | " + " | ".join(cells)
            + f" | {entry['mean_fd_share']} / {entry['mean_is_ratio']} "
            f"| {'met' if entry['targets_met_on_every_kind'] else 'missed'} |"
        )  # fmt: skip
    if summary["best"]:
        lines += ["", f"best over the kinds: {summary['best']} (lowest mean classifier FD share)"]
    return lines
