"""Pure audio functions, without Ray."""

from __future__ import annotations

import io
import itertools
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from conftest import dominant_hz, encode, tone

from audiogan import audio
from audiogan.audio import Rejected, clips_from_file
from audiogan.config import PrepareConfig


def decode(data: bytes, cfg: PrepareConfig | None = None, key: str = "x.wav") -> audio.Decoded:
    return clips_from_file(io.BytesIO(data), len(data), cfg or PrepareConfig(), key)


def reject_reason(data: bytes, cfg: PrepareConfig | None = None) -> str:
    with pytest.raises(Rejected) as caught:
        decode(data, cfg)
    return caught.value.reason


def snr_db(signal: np.ndarray, reference: np.ndarray) -> float:
    error = signal.astype(np.float64) - reference
    return float(10 * np.log10(np.sum(reference**2) / np.sum(error**2)))


@pytest.mark.parametrize("orig_hz", [44100, 22050, 96000, 8000])
def test_resample_keeps_a_tone_and_meets_110_db_against_float64(orig_hz):
    x = tone(1000, 2.0, orig_hz, amplitude=1.0)
    y = audio.resample(x, orig_hz, 16000)
    assert y.size == int(np.ceil(x.size * 16000 / orig_hz))
    assert dominant_hz(y, 16000) == pytest.approx(1000, abs=0.5)
    # float64 reference: the same tone computed directly at 16 kHz; edges hold filter warm-up.
    reference = np.sin(2 * np.pi * 1000 * np.arange(y.size) / 16000)
    inner = slice(300, -300)
    # Measured: 121.8 dB (44.1k), 115.9 dB (22.05k), 131.7 dB (96k), 141.5 dB (8k, upsampled).
    assert snr_db(y[inner], reference[inner]) > 110


@pytest.mark.parametrize("orig_hz", [44100, 22050, 11025, 96000, 48000, 8000])
def test_banded_resampler_matches_torchaudio(orig_hz):
    x = np.random.default_rng(0).uniform(-1, 1, orig_hz).astype(np.float32)
    ours = audio.resample(x, orig_hz, 16000, filter_width=16)
    theirs = torchaudio.functional.resample(
        torch.from_numpy(x)[None],
        orig_hz,
        16000,
        lowpass_filter_width=16,
        rolloff=0.9475937167399596,
        resampling_method="sinc_interp_kaiser",
        beta=14.769656459379492,
    )[0].numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_a_strange_rate_is_nudged_to_a_small_kernel_and_keeps_pitch():
    assert audio.resample_source_rate(44101, 16000) == 44100
    assert audio.resample_source_rate(44100, 16000) == 44100
    y = audio.resample(tone(1000, 1.0, 44101), 44101, 16000)
    assert dominant_hz(y, 16000) == pytest.approx(1000, rel=1e-3)


def test_read_mono_averages_channels_block_by_block():
    left, right = tone(300, 2.0, 8000), tone(700, 2.0, 8000)
    data = encode(np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    sound = audio.open_audio(io.BytesIO(data))
    mono = audio.read_mono(sound, 10**9)  # far more than the file holds
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-6)


def test_pcm16_fast_path_equals_libsndfile_float_conversion():
    x = tone(440, 0.5, 16000, amplitude=0.9)
    data = encode(x, 16000, subtype="PCM_16")
    ours = audio.read_mono(audio.open_audio(io.BytesIO(data)), 8000)
    theirs, _ = sf.read(io.BytesIO(data), dtype="float32")
    np.testing.assert_array_equal(ours, theirs)


def test_wav_truncation_is_spotted_from_the_header():
    data = encode(tone(440, 1.0, 16000), 16000, subtype="PCM_16")
    assert audio.container_truncation(data, len(data)) is None
    message = audio.container_truncation(data[:5000], 5000)
    assert message and message.startswith("truncated")
    assert (
        audio.container_truncation(b"fLaC" + b"\0" * 40, 44) is None
    )  # not a WAV: not its business


def test_fit_length_pads_or_refuses():
    x = np.ones(3, np.float32)
    np.testing.assert_array_equal(audio.fit_length(x, 6, "end"), [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(audio.fit_length(x, 6, "center"), [0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(audio.fit_length(np.arange(8.0), 6, "end"), np.arange(6.0))
    with pytest.raises(Rejected, match="too_short"):
        audio.fit_length(x, 6, "none")


def test_normalize_peak_and_rms():
    x = tone(440, 1.0, 16000, amplitude=0.1)
    peak = audio.normalize(x, "peak", 0.99, -20)
    assert np.max(np.abs(peak)) == pytest.approx(0.99, abs=1e-6)
    rms = audio.normalize(x, "rms", 0.99, -20)
    assert np.sqrt(np.mean(rms.astype(np.float64) ** 2)) == pytest.approx(0.1, rel=1e-3)
    # A spiky signal cannot reach the RMS target without clipping: the peak cap wins.
    spiky = np.zeros(16000, np.float32)
    spiky[::1000] = 0.5
    capped = audio.normalize(spiky, "rms", 0.99, -20)
    assert np.max(np.abs(capped)) == pytest.approx(0.99, abs=1e-6)


# --- one file end to end --------------------------------------------------------------------


def test_a_440_hz_tone_at_96_khz_in_8_channels_becomes_one_mono_16_khz_clip():
    x = tone(440, 5.0, 96000)
    decoded = decode(encode(np.tile(x[:, None], (1, 8)), 96000, subtype="PCM_24"))
    assert decoded.source_sample_rate_hz == 96000
    assert decoded.source_seconds == pytest.approx(5.0)
    [(window, clip)] = decoded.clips
    assert window == 0 and clip.shape == (64000,) and clip.dtype == np.float32
    assert dominant_hz(clip, 16000) == pytest.approx(440, abs=0.5)
    assert np.max(np.abs(clip)) == pytest.approx(0.99, abs=1e-3)


@pytest.mark.parametrize(
    "rate_hz,kwargs",
    [
        (8000, {"subtype": "PCM_16"}),
        (44100, {"subtype": "PCM_24"}),
        (22050, {"subtype": "FLOAT"}),
        (48000, {"subtype": "DOUBLE"}),
        (44100, {"format": "FLAC"}),
        (32000, {"format": "OGG", "subtype": "VORBIS"}),
    ],
)
def test_unusual_but_valid_files_become_correct_clips(rate_hz, kwargs):
    decoded = decode(encode(tone(440, 2.0, rate_hz), rate_hz, **kwargs))
    [(_, clip)] = decoded.clips
    assert clip.shape == (64000,)
    assert dominant_hz(clip[:32000], 16000) == pytest.approx(440, abs=1.0)
    assert np.all(clip[32100:] == 0)  # 2 s of sound, then the padding


def test_bad_files_are_rejected_with_their_reason():
    assert reject_reason(b"") == "empty"
    assert reject_reason(b"this is a text file, not audio\n" * 10) == "decode_error"
    good = encode(tone(440, 1.0, 16000), 16000, subtype="PCM_16")
    assert reject_reason(good[: len(good) // 2]) == "decode_error"  # truncated
    assert reject_reason(good[:30]) == "decode_error"  # cut inside the header
    nan = tone(440, 1.0, 16000)
    nan[100] = np.nan
    assert reject_reason(encode(nan, 16000, subtype="FLOAT")) == "non_finite"
    inf = tone(440, 1.0, 16000)
    inf[5] = np.inf
    assert reject_reason(encode(inf, 16000, subtype="FLOAT")) == "non_finite"
    assert reject_reason(encode(np.array([0.5], np.float32), 16000)) == "too_short"
    assert reject_reason(encode(np.zeros(16000, np.float32), 16000)) == "silent"
    assert reject_reason(encode(np.zeros((0,), np.float32), 16000)) == "empty"


def test_a_header_that_claims_gigabytes_is_not_believed():
    data = bytearray(encode(tone(440, 0.5, 16000), 16000, subtype="PCM_16"))
    riff_size_at, data_size_at = 4, data.index(b"data") + 4
    data[riff_size_at : riff_size_at + 4] = struct.pack("<I", 0xFFFFFFF0)
    data[data_size_at : data_size_at + 4] = struct.pack("<I", 0xFFFFFFF0)
    try:
        decoded = decode(bytes(data))
    except Rejected as rejected:  # rejecting is fine; allocating gigabytes is not
        assert rejected.reason in ("decode_error", "unsupported")
    else:
        assert decoded.clips[0][1].shape == (64000,)


def test_a_clip_with_silence_at_the_start_is_kept_whole_by_trim_and_refused_without():
    x = np.concatenate([np.zeros(16000 * 5, np.float32), tone(440, 1.0, 16000)])
    data = encode(x, 16000, subtype="PCM_16")
    assert reject_reason(data) == "silent"
    [(_, clip)] = decode(data, PrepareConfig(trim_silence=True)).clips
    assert np.max(np.abs(clip[:100])) > 0.1  # the sound starts at the clip's start


def test_windows_cut_a_long_file_into_several_clips():
    data = encode(tone(440, 10.0, 16000), 16000, subtype="PCM_16")
    decoded = decode(data, PrepareConfig(crop="windows"))
    assert [window for window, _ in decoded.clips] == [0, 1, 2]  # 4 + 4 + 2 (half a clip) s
    assert np.all(decoded.clips[2][1][32000:] == 0)


def test_random_crop_depends_only_on_seed_and_file():
    data = encode(np.random.default_rng(1).uniform(-1, 1, 16000 * 8).astype(np.float32), 16000)
    cfg = PrepareConfig(crop="random", seed=3)
    first = decode(data, cfg, "a.wav").clips[0][1]
    np.testing.assert_array_equal(first, decode(data, cfg, "a.wav").clips[0][1])
    assert not np.array_equal(first, decode(data, cfg, "b.wav").clips[0][1])
    assert not np.array_equal(
        first, decode(data, PrepareConfig(crop="random", seed=4), "a.wav").clips[0][1]
    )


@pytest.mark.parametrize("orig_hz", [44100, 22050, 96000, 8000])
def test_a_clip_cut_from_the_middle_equals_resampling_the_whole_file_then_cutting(orig_hz):
    """No click at the cut: the filter sees real audio either side of the decoded part."""
    noise = np.random.default_rng(2).uniform(-0.5, 0.5, orig_hz * 9).astype(np.float32)
    cfg = PrepareConfig(crop="center", normalize="peak", peak_target=1.0)
    [(_, clip)] = decode(encode(noise, orig_hz, subtype="FLOAT"), cfg).clips
    whole = audio.resample(noise, orig_hz, 16000)

    def error_at(start: int) -> float:
        segment = whole[start : start + 64000]
        return float(np.max(np.abs(segment / np.max(np.abs(segment)) - clip)))

    # Where in the whole the clip sits: near the centre, within one alignment unit.
    errors = {start: error_at(start) for start in range(40000 - 400, 40000 + 400)}
    assert min(errors.values()) < 1e-5


def test_truncated_files_of_other_formats_are_decode_errors():
    x = tone(440, 6.0, 44100)
    for kwargs in ({"format": "AIFF", "subtype": "PCM_16"}, {"format": "FLAC"}):
        data = encode(x, 44100, **kwargs)
        assert reject_reason(data[: len(data) // 3]) == "decode_error", kwargs


def test_windows_with_pad_none_keep_the_full_windows():
    data = encode(tone(440, 10.0, 16000), 16000, subtype="PCM_16")
    decoded = decode(data, PrepareConfig(crop="windows", pad="none"))
    assert [window for window, _ in decoded.clips] == [0, 1]


def test_an_implausible_sample_rate_is_unsupported():
    assert reject_reason(encode(tone(100, 1.0, 500), 500, subtype="PCM_16")) == "unsupported"


class FailingFile(io.BytesIO):
    """Reads like a file whose storage goes away after `good_bytes`."""

    def __init__(self, data: bytes, good_bytes: int):
        super().__init__(data)
        self.good_bytes = good_bytes

    def read(self, size=-1):
        if self.tell() >= self.good_bytes:
            raise ConnectionResetError("storage went away")
        return super().read(size)

    def readinto(self, buffer):
        if self.tell() >= self.good_bytes:
            raise ConnectionResetError("storage went away")
        return super().readinto(buffer)


def test_a_storage_error_mid_file_is_raised_not_taken_for_a_short_file():
    data = encode(tone(440, 20.0, 16000), 16000, subtype="PCM_16")
    with pytest.raises(OSError, match="storage went away"):
        clips_from_file(FailingFile(data, 200_000), len(data), PrepareConfig(crop="windows"), "k")


# --- reading forward: crops and windows equal the whole-signal computation ---------------------


def reference_clips(
    signal: np.ndarray, cfg: PrepareConfig, key: str
) -> list[tuple[int, np.ndarray]]:
    """What prepare promises, computed the plain way on the whole signal (already at the
    target rate): trim, choose offsets, cut, pad, drop silent windows, normalise."""
    threshold = audio.db_to_amplitude(cfg.silence_threshold_db)
    clip = cfg.clip_samples
    if cfg.trim_silence:
        loud = np.flatnonzero(np.abs(signal) > threshold)
        signal = signal[loud[0] : loud[-1] + 1]
    spare = max(signal.size - clip, 0)
    if cfg.crop == "windows":
        full = max(signal.size // clip, 1)
        offsets = [i * clip for i in range(full)]
        if signal.size >= clip and signal.size - full * clip >= clip // 2 and cfg.pad != "none":
            offsets.append(full * clip)
        if cfg.max_windows:
            offsets = offsets[: cfg.max_windows]
    else:
        random_offset = int(audio.stable_rng(cfg.seed, key).integers(0, spare + 1))
        offsets = [{"start": 0, "center": spare // 2, "random": random_offset}[cfg.crop]]
    clips = []
    for window, offset in enumerate(offsets):
        piece = audio.fit_length(signal[offset : offset + clip], clip, cfg.pad)
        if np.max(np.abs(piece)) > threshold:
            clips.append((window, audio.normalize(piece, cfg.normalize, cfg.peak_target, -20)))
    return clips


def bursts(seconds_on_off: list[tuple[float, float]], rate_hz: int = 16000) -> np.ndarray:
    """Noise bursts and silences: [(0.7, 1.3), ...] is 0.7 s of noise, then 1.3 s of silence."""
    rng = np.random.default_rng(5)
    parts = []
    for on, off in seconds_on_off:
        parts += [rng.uniform(-0.5, 0.5, int(on * rate_hz)), np.zeros(int(off * rate_hz))]
    return np.concatenate(parts).astype(np.float32)


SIGNALS = {
    "shorter than a clip": bursts([(0.3, 0.2), (0.2, 0.1)]),
    "silence around the sound": bursts([(0.0, 1.5), (2.5, 0.5), (3.0, 2.2)]),
    "a pause longer than a clip": bursts([(1.0, 0.0), (0.5, 5.0), (2.0, 0.1)]),
    "exactly three clips": bursts([(12.0, 0.0)]),
    "a tail just under half a clip": bursts([(9.99, 0.0)]),
    "a tail of half a clip": bursts([(10.0, 0.0)]),
}


@pytest.mark.parametrize("name", SIGNALS)
@pytest.mark.parametrize(
    "options",
    [
        {"crop": "windows"},
        {"crop": "windows", "trim_silence": True},
        {"crop": "windows", "trim_silence": True, "pad": "center"},
        {"crop": "windows", "pad": "none"},
        {"crop": "windows", "max_windows": 2},
        {"crop": "center", "trim_silence": True},
        {"crop": "random", "trim_silence": True, "seed": 3},
        {"crop": "start", "trim_silence": True},
        {"crop": "center"},
    ],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()),
)
def test_read_forward_clips_equal_the_whole_signal_computation(name, options):
    # At the target rate nothing is resampled, so the two must agree to the bit.
    signal = SIGNALS[name]
    cfg = PrepareConfig(min_source_seconds=0.0, **options)
    try:
        expected = reference_clips(signal, cfg, "k.wav")
    except Rejected as rejected:
        assert reject_reason(encode(signal, 16000, subtype="FLOAT"), cfg) == rejected.reason
        return
    if not expected:
        assert reject_reason(encode(signal, 16000, subtype="FLOAT"), cfg) == "silent"
        return
    decoded = decode(encode(signal, 16000, subtype="FLOAT"), cfg, "k.wav")
    assert [window for window, _ in decoded.clips] == [window for window, _ in expected]
    for (_, ours), (_, theirs) in zip(decoded.clips, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("orig_hz", [44100, 48000, 22050])
@pytest.mark.parametrize("read_sizes", [[7, 1000, 64000], [250_000, 3], [1, 17, 4001]])
def test_reading_forward_in_any_steps_matches_resampling_the_whole(orig_hz, read_sizes):
    noise = np.random.default_rng(4).uniform(-0.8, 0.8, orig_hz * 7).astype(np.float32)
    whole = audio.resample(noise, orig_hz, 16000)
    for start in (0, 1, 33333):
        stream = audio.Resampled(
            audio.open_audio(io.BytesIO(encode(noise, orig_hz, subtype="FLOAT"))), 16000, 16, start
        )
        parts, sizes = [], itertools.cycle(read_sizes)
        while (part := stream.read(next(sizes))).size:
            parts.append(part)
        got = np.concatenate(parts)
        assert got.size == whole.size - start
        # Each block is rounded to integers on its own scale: equal to ~1e-7 (-140 dB).
        np.testing.assert_allclose(got, whole[start:], atol=2e-7)


def test_the_resampler_is_exact_whatever_the_blas_threads(report_fault):
    """The same bytes with 1, 2 and 4 BLAS threads, and with the threads pinned in-process."""
    code = (
        "import hashlib, io, sys, numpy as np, soundfile as sf;"
        "from audiogan.audio import clips_from_file;"
        "from audiogan.config import PrepareConfig;"
        "x = np.random.default_rng(0).uniform(-0.9, 0.9, 44100 * 9).astype(np.float32);"
        "b = io.BytesIO(); sf.write(b, x, 44100, format='WAV', subtype='FLOAT'); d = b.getvalue();"
        "h = hashlib.sha256();"
        "[h.update(c.tobytes()) for cfg in (PrepareConfig(), PrepareConfig(crop='windows', "
        "clip_seconds=1.0)) for _, c in clips_from_file(io.BytesIO(d), len(d), cfg, 'k').clips];"
        "print(h.hexdigest())"
    )
    digests = set()
    for threads in ("1", "2", "4"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        digests.add(done.stdout.strip())
    assert len(digests) == 1
    report_fault("prepare's clips with 1, 2 and 4 BLAS threads", "the same SHA-256")


def test_exact_arithmetic_leaves_no_room_for_rounding():
    """Every tap and every sample is an integer, and no sum can reach 2^53."""
    for orig_hz in (44100, 48000, 22050, 96000, 8000, 11025, 44101):
        rate = audio.resample_source_rate(orig_hz, 16000)
        plan = audio._resample_plan(rate, 16000, 16)
        taps = [t for *_, t in plan.bands] + [t for p in plan.phases for t in p]
        assert all(np.array_equal(t, np.rint(t)) for t in taps)
        largest = (
            max(float(np.abs(t).sum(axis=0).max()) for t in taps if t.ndim == 2)
            if (plan.bands)
            else max(sum(float(np.abs(t).sum()) for t in p) for p in plan.phases)
        )
        assert largest * 2**audio.SAMPLE_BITS < 2**53, orig_hz


def test_windows_stop_at_max_windows_and_say_how_much_is_left_out():
    signal = bursts([(60.0, 0.0)])
    data = encode(signal, 16000, subtype="PCM_16")

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):
            chunk = super().read(size)
            Counting.read_bytes += len(chunk)
            return chunk

        def readinto(self, buffer):
            count = super().readinto(buffer)
            Counting.read_bytes += count
            return count

    cfg = PrepareConfig(crop="windows", clip_seconds=1.0, max_windows=10)
    decoded = clips_from_file(Counting(data), len(data), cfg, "long.wav")
    assert [window for window, _ in decoded.clips] == list(range(10))
    assert decoded.seconds_left_out == pytest.approx(50.0)
    assert decoded.source_seconds == pytest.approx(60.0)  # the file's true length
    assert Counting.read_bytes < 0.25 * len(data)  # the rest of the file was never read
    everything = decode(data, PrepareConfig(crop="windows", clip_seconds=1.0, max_windows=0))
    assert len(everything.clips) == 60 and everything.seconds_left_out == 0


def test_a_long_file_is_read_in_bounded_memory():
    import tracemalloc

    signal = np.tile(bursts([(1.0, 0.0)], 8000), 20 * 60)  # 20 minutes at 8 kHz
    data = encode(signal, 8000, subtype="PCM_16")
    cfg = PrepareConfig(crop="center", trim_silence=True)  # reads the whole file
    tracemalloc.start()
    decode(data, cfg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The file is 19 MB as 16-bit, 38 MB as float32 and 77 MB resampled to 16 kHz.
    assert peak < 8 * 2**20, peak  # measured: 5.8 MiB


def test_noise_that_looks_like_mpeg_is_a_clear_decode_error():
    junk = bytes([0xFF, 0xFB, 0x90, 0x64]) + np.random.default_rng(0).bytes(40_000)
    with pytest.raises(Rejected) as caught:
        decode(junk)
    assert caught.value.reason == "decode_error"
    assert caught.value.detail == "not a readable audio file (no valid audio frame found)"
    assert "0x" not in decode_detail(b"plain text, not audio\n" * 50)


def decode_detail(data: bytes) -> str:
    with pytest.raises(Rejected) as caught:
        decode(data)
    return caught.value.detail


def test_decoder_noise_on_stderr_is_hidden(capfd):
    junk = bytes([0xFF, 0xFB, 0x90, 0x64]) + np.random.default_rng(0).bytes(70_000)
    with audio.decoder_output_hidden():
        with pytest.raises(Rejected):
            decode(junk)
    assert capfd.readouterr().err == ""
    with pytest.raises(Rejected):
        decode(junk)
    assert "MPEG" in capfd.readouterr().err  # what it hides: libmpg123 talking


def mp3_of(signal: np.ndarray, rate_hz: int) -> bytes:
    return encode(signal, rate_hz, format="MP3")


def test_libsndfile_garbles_an_mp3_read_in_pieces_so_it_is_read_whole():
    """Why audio.WholeMp3 exists: one read is right, reads of 1,000 frames are not (libsndfile
    1.2.2). Should a release fix it, this fails, and MP3s can be read forward like the rest."""
    t = np.arange(44100 * 4) / 44100
    signal = (0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 0.7 * t)).astype(np.float32)
    data = mp3_of(signal, 44100)
    whole, _ = sf.read(io.BytesIO(data), dtype="float32")
    sound = sf.SoundFile(io.BytesIO(data))
    pieces = np.concatenate([sound.read(1000, dtype="float32") for _ in range(177)])
    assert np.max(np.abs(whole[:20000] - signal[:20000])) < 0.02  # MP3's own error
    assert np.max(np.abs(pieces[: whole.size] - whole)) > 0.1


@pytest.mark.parametrize("crop", ["start", "center", "random"])
def test_an_mp3_gives_the_clips_of_its_whole_decode(crop):
    rate = 44100
    # Noise, so that the clip fits one place of the whole decode only.
    sound = np.random.default_rng(3).uniform(-0.3, 0.3, rate * 9).astype(np.float32)
    data = mp3_of(np.concatenate([np.zeros(int(rate * 1.3), np.float32), sound]), rate)
    whole = audio.resample(sf.read(io.BytesIO(data), dtype="float32")[0], rate, 16000)
    cfg = PrepareConfig(clip_seconds=1.0, trim_silence=True, crop=crop, seed=2)
    [(_, clip)] = decode(data, cfg).clips
    threshold = audio.db_to_amplitude(cfg.silence_threshold_db)
    if crop == "start":  # the clip starts where the sound does
        assert np.flatnonzero(np.abs(clip) > threshold)[0] == 0
    # It is a piece of the whole decode, to float rounding: found where they correlate best.
    scores = np.correlate(whole, clip, mode="valid")
    best = int(np.argmax(scores))
    piece = whole[best : best + 16000]
    assert np.max(np.abs(piece / np.max(np.abs(piece)) * 0.99 - clip)) < 1e-5
