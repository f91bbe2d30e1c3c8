"""Configs without Ray: defaults, YAML presets and key=value overrides, the built-in presets
found by name, the default recipe's choice, and bad values refused with a message naming them."""

from __future__ import annotations

import pytest

from audiogan.config import ConfigError, PrepareConfig, from_dict, to_dict


def test_defaults_give_the_seed_experiments_clip():
    cfg = PrepareConfig()
    assert (cfg.sample_rate_hz, cfg.clip_seconds, cfg.clip_samples) == (16000, 4.0, 64000)
    assert PrepareConfig(clip_seconds=1.0).clip_samples == 16000


def test_from_dict_round_trips_and_turns_lists_into_tuples():
    cfg = from_dict(PrepareConfig, {"labels": ["Saxophone", "Trumpet"], "clip_seconds": 1})
    assert cfg.labels == ("Saxophone", "Trumpet")
    assert from_dict(PrepareConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "values,message",
    [
        ({"sample_rte_hz": 16000}, "unknown PrepareConfig key"),
        ({"clip_seconds": "4"}, "clip_seconds must be float"),
        ({"batch_size": 2.5}, "batch_size must be int"),
        ({"trim_silence": "yes"}, "trim_silence must be bool"),
        ({"batch_size": True}, "batch_size must be int"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"clip_seconds": -1.0}, "clip_seconds must be positive"),
        ({"clip_seconds": float("inf")}, "must be finite"),
        ({"crop": "middle"}, "crop must be one of"),
        ({"normalize": "loud"}, "normalize must be one of"),
        ({"labels": []}, "labels must not be empty"),
        ({"sample_rate_hz": 100}, "at least 1000"),
        ({"clip_seconds": 1.0, "min_source_seconds": 2.0}, "clip_seconds must be at least 2"),
        ({"clip_seconds": 1e9}, "clip_seconds must be at most 60"),
        ({"max_windows": -1}, "max_windows must be >= 0"),
    ],
)
def test_bad_values_are_refused_with_a_message_that_names_them(values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(PrepareConfig, values)


# --- TrainConfig -------------------------------------------------------------------------------

from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

from audiogan.config import TrainConfig, load_config, parse_overrides  # noqa: E402

PRESETS = Path(__file__).resolve().parent.parent / "audiogan" / "presets"


@pytest.mark.parametrize(
    "preset", sorted(p.name for p in PRESETS.glob("*.yaml") if not p.name.startswith("sweep_"))
)
def test_every_preset_loads(preset):  # sweep_*.yaml are sweep files: tests/test_tune.py
    cfg = load_config(TrainConfig, str(PRESETS / preset))
    assert isinstance(cfg.lr_g, float) and cfg.lr_g > 0


def test_presets_hold_the_published_settings():
    baseline = load_config(TrainConfig, str(PRESETS / "dcgan.yaml"))
    assert (baseline.model, baseline.loss, baseline.latent_dim, baseline.n_critic) == (
        "dcgan", "bce", 500, 1,
    )  # fmt: skip
    wave = load_config(TrainConfig, str(PRESETS / "wavegan.yaml"))
    assert (wave.model_dim, wave.n_critic, wave.gp_weight, wave.betas) == (64, 5, 10.0, (0.5, 0.9))


def test_overrides_beat_the_file_and_read_as_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr_g: 1e-4\nbatch_size: 8\n")
    cfg = load_config(
        TrainConfig, str(path), parse_overrides(["batch_size=4", "betas=[0.0, 0.99]"])
    )
    assert (cfg.lr_g, cfg.batch_size, cfg.betas) == (1e-4, 4, (0.0, 0.99))


@pytest.mark.parametrize(
    "text,message",
    [
        ("lr_gen: 1e-4\n", "unknown TrainConfig key"),
        ("lr_g: -1e-4\n", "must be positive"),
        ("batch_size: 0\n", "batch_size must be at least 1"),
        ("batch_size: eight\n", "batch_size must be int"),
        ("model: biggan\n", "model must be one of"),
        ("sources: 0\n", "sources must be at least 1"),
        ("model: hybrid\ndiscriminator: stft\nsources: 3\n", "sources is model=ddsp's"),
        ("- a\n- b\n", "must hold a mapping"),
        ("lr_g: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml_configs_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, str(path))


def test_bad_overrides_are_refused():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["lr_g"])
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(TrainConfig, "/no/such/file.yaml")


# `audiogan train` without --config: the default recipe, conditional where the data allows.


def _train_args(*extra: str):
    from audiogan.cli import build_parser

    return build_parser().parse_args(["train", "--data", "d", "--storage", "s", "--name", "n",
                                      *extra])  # fmt: skip


def _manifest(clips_per_label: dict[str, int], unlabelled: int = 0) -> dict:
    return {"labels": sorted(clips_per_label),
            "counts": {"per_label": clips_per_label, "unlabelled": unlabelled}}  # fmt: skip


def test_train_without_config_takes_the_default_made_unconditional_for_data_without_classes():
    from audiogan.commands.train import train_config_from_args
    from audiogan.config import DEFAULT_PRESETS

    assert DEFAULT_PRESETS == {"cpu": PRESETS / "ddsp_stft_cond.yaml",
                               "gpu": PRESETS / "ddsp_stft_gpu.yaml"}  # fmt: skip
    preset = load_config(TrainConfig, PRESETS / "ddsp_stft_cond.yaml")
    cfg, chosen = train_config_from_args(_train_args("max_steps=5"), _manifest({"a": 3, "b": 2}))
    assert cfg == replace(preset, max_steps=5)
    assert chosen == "train: no --config: the default, ddsp_stft_cond.yaml (2 classes: " \
        "class-conditional)"  # fmt: skip
    # One class (a listed class with no clips left does not count), clips without one (which
    # conditional training would leave out), or none: the same recipe, unconditional.
    for manifest, why in ((_manifest({"a": 3, "b": 0}), "1 class(es)"),
                          (_manifest({"a": 3, "b": 2}, unlabelled=3), "3 unlabelled clips"),
                          (_manifest({}), "0 class(es)")):  # fmt: skip
        cfg, chosen = train_config_from_args(_train_args(), manifest)
        assert cfg == replace(preset, conditional=False)
        assert chosen.endswith(f"({why}: unconditional (conditional=false))")
    # What the user sets wins, and the line says so.
    cfg, chosen = train_config_from_args(_train_args("conditional=true"), _manifest({"a": 3}))
    assert cfg == preset and chosen.endswith("(conditional=true as given)")
    # --gpu takes the GPU preset; --config, or a model named, take no default recipe at all.
    cfg, chosen = train_config_from_args(_train_args("--gpu"), _manifest({"a": 3, "b": 2}))
    assert cfg == load_config(TrainConfig, PRESETS / "ddsp_stft_gpu.yaml")
    assert "ddsp_stft_gpu.yaml" in chosen
    no_data = _manifest({})  # would make the default unconditional, were it read
    cfg, chosen = train_config_from_args(_train_args("--config", str(PRESETS / "wavegan.yaml")),
                                         no_data)  # fmt: skip
    assert cfg == load_config(TrainConfig, PRESETS / "wavegan.yaml") and chosen is None
    for named in (("--model", "wavegan"), ("model=wavegan",)):
        cfg, chosen = train_config_from_args(_train_args(*named), no_data)
        assert cfg == TrainConfig(model="wavegan") and chosen is None
    # A key the default preset refuses is named with that preset.
    with pytest.raises(ConfigError, match=r"on the default preset ddsp_stft_cond\.yaml"):
        train_config_from_args(_train_args("batch_size=0"), _manifest({"a": 3, "b": 2}))


def test_a_preset_is_found_by_name_and_a_path_still_works(tmp_path):
    from audiogan.config import PRESETS_DIR, find_preset

    assert find_preset("wavegan") == find_preset("wavegan.yaml") == PRESETS_DIR / "wavegan.yaml"
    own = tmp_path / "wavegan.yaml"
    own.write_text("model_dim: 8\n")
    assert find_preset(str(own)) == own  # a file of the user's wins over the built-in name
    assert load_config(TrainConfig, str(own)).model_dim == 8
    assert (
        load_config(TrainConfig, "small_cpu").model_dim
        == load_config(TrainConfig, PRESETS_DIR / "small_cpu.yaml").model_dim
    )
    with pytest.raises(ConfigError, match="no built-in preset of that name.*small_cpu"):
        find_preset("wavgan")
    with pytest.raises(ConfigError, match="cannot read config elsewhere/wavegan.yaml"):
        load_config(TrainConfig, "elsewhere/wavegan.yaml")  # a path is a path, never a name
