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
        ({"clip_seconds": 1.0, "min_source_seconds": 2.0}, "between 0 and clip_seconds"),
    ],
)
def test_bad_values_are_refused_with_a_message_that_names_them(values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(PrepareConfig, values)
