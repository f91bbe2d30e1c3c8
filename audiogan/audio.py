"""Pure audio transforms: decode, mix to mono, resample, trim, crop or pad, normalise.

Every function takes what it needs as arguments and touches no global state except a cache of
resampling kernels keyed on every argument. Ray Data calls `clips_from_file` on each source
file; tests call the pieces directly.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile as sf

from audiogan.config import PrepareConfig

# Short codes of the rejects table (DESIGN.md, Prepared dataset).
REJECT_REASONS = (
    "decode_error",
    "empty",
    "silent",
    "too_short",
    "non_finite",
    "unsupported",
    "missing",
    "unsafe_path",
)

# Sources outside these bounds are almost certainly a corrupt header, not real audio.
MIN_SOURCE_RATE_HZ = 1000
MAX_SOURCE_RATE_HZ = 768_000
MAX_CHANNELS = 256
# Frames decoded per read (6 s at 44.1 kHz, so most clips take one read): the multichannel
# buffer never exceeds this, whatever the header says.
READ_BLOCK_FRAMES = 262_144
# Decoding never goes past this many frames (2^26: 268 MB as mono float32), whatever the
# configured seconds allow at a high rate.
MAX_DECODE_FRAMES = 1 << 26
# Bytes peeked at the start of a file to check a WAV or AIFF header against the file's real size.
HEADER_PEEK_BYTES = 65_536
# A resampling kernel is (new/g) x (orig/g) taps; past this product it grows to gigabytes.
MAX_RESAMPLE_RATIO_PRODUCT = 1_000_000
# How far a strange source rate may be nudged to get a small kernel (a pitch error below 1%).
MAX_RATE_NUDGE = 0.01


class Rejected(Exception):
    """A source file that cannot become a training clip, with a short reason code."""

    def __init__(self, reason: str, detail: str):
        assert reason in REJECT_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Decoded:
    """What one source file yields: its original rate and length, and its clips by window."""

    source_sample_rate_hz: int
    source_seconds: float
    clips: list[tuple[int, np.ndarray]]  # (window index, (clip_samples,) float32)


def db_to_amplitude(db: float) -> float:
    return 10.0 ** (db / 20.0)


def stable_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, key), not on batching or worker order."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# ---------------------------------------------------------------------------------------------
# Decoding


def container_truncation(head: bytes, file_size: int) -> str | None:
    """Says why a WAV or AIFF file is truncated, or None when its audio chunk fits in the file.

    libsndfile quietly shortens a file whose audio chunk runs past the end of the file, so the
    check is made on the header itself.
    """
    if len(head) < 12:
        return None
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        endian, audio_chunk = ("<" if head[:4] == b"RIFF" else ">"), b"data"
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        endian, audio_chunk = ">", b"SSND"
    else:
        return None
    position = 12
    while position + 8 <= len(head):
        chunk_id = head[position : position + 4]
        (chunk_bytes,) = struct.unpack(endian + "I", head[position + 4 : position + 8])
        if chunk_id == audio_chunk:
            # 0 and 0xFFFFFFFF mark a stream whose writer never knew the length.
            if chunk_bytes in (0, 0xFFFFFFFF):
                return None
            available = file_size - (position + 8)
            if chunk_bytes > available:
                return (
                    f"truncated: the header declares {chunk_bytes} bytes of audio, "
                    f"the file holds {max(available, 0)}"
                )
            return None
        position += 8 + chunk_bytes + (chunk_bytes & 1)
    return None


def open_audio(file: BinaryIO) -> sf.SoundFile:
    """Opens a file-like object with libsndfile, turning every failure into a Rejected."""
    try:
        sound = sf.SoundFile(file)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, EOFError) as error:
        raise Rejected("decode_error", f"not a readable audio file ({_short(error)})") from None
    if not MIN_SOURCE_RATE_HZ <= sound.samplerate <= MAX_SOURCE_RATE_HZ:
        raise Rejected("unsupported", f"sample rate {sound.samplerate} Hz is out of range")
    if not 1 <= sound.channels <= MAX_CHANNELS:
        raise Rejected("unsupported", f"{sound.channels} channels is out of range")
    return sound


def read_mono(sound: sf.SoundFile, start_frame: int, max_frames: int) -> np.ndarray:
    """Reads up to `max_frames` frames from `start_frame`, mixing each block to mono.

    Reading block by block keeps memory proportional to the mono result, however many
    channels or frames the header claims.
    """
    try:
        if start_frame:
            sound.seek(start_frame)
        blocks = []
        remaining = max_frames
        # 16-bit PCM is read as it is stored and scaled here, as libsndfile would (x / 32768),
        # which skips libsndfile's slower per-sample conversion.
        as_int16 = sound.subtype == "PCM_16"
        while remaining > 0:
            count = min(READ_BLOCK_FRAMES, remaining)
            block = sound.read(count, dtype="int16" if as_int16 else "float32", always_2d=True)
            if len(block) == 0:
                break
            if block.shape[1] == 1:
                mono = block[:, 0].astype(np.float32)
            else:
                mono = block.mean(axis=1, dtype=np.float32)  # (frames, channels) -> (frames,)
            if as_int16:
                mono *= np.float32(1 / 32768)
            blocks.append(mono)
            remaining -= len(block)
    except (sf.SoundFileError, RuntimeError, ValueError) as error:
        raise Rejected("decode_error", f"decoding failed ({_short(error)})") from None
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


# ---------------------------------------------------------------------------------------------
# Resampling


@functools.lru_cache(maxsize=64)  # every file of a dataset asks, usually for the same rate
def resample_source_rate(orig_hz: int, new_hz: int) -> int:
    """The source rate to resample from: `orig_hz` itself, or the nearest rate with a small kernel.

    A rate such as 44,101 Hz shares no factor with 16,000 Hz, and an exact polyphase kernel
    would take gigabytes; treating it as 44,100 Hz shifts pitch by 0.002%.
    """

    def small_kernel(rate: int) -> bool:
        g = math.gcd(rate, new_hz)
        return (rate // g) * (new_hz // g) <= MAX_RESAMPLE_RATIO_PRODUCT

    if small_kernel(orig_hz):
        return orig_hz
    for delta in range(1, int(orig_hz * MAX_RATE_NUDGE) + 1):
        for candidate in (orig_hz - delta, orig_hz + delta):
            if small_kernel(candidate):
                return candidate
    raise Rejected("unsupported", f"cannot resample {orig_hz} Hz to {new_hz} Hz accurately")


# Kaiser window with librosa's "kaiser_best" rolloff and beta: ~120 dB on a pure tone.
RESAMPLE_ROLLOFF = 0.9475937167399596
RESAMPLE_KAISER_BETA = 14.769656459379492


def sinc_kernel(orig_hz: int, new_hz: int, filter_width: int) -> tuple[np.ndarray, int]:
    """torchaudio's polyphase resampling kernel (`sinc_interp_kaiser`), computed in float64.

    Returns (kernel, width): kernel[p, k] weighs padded input sample `orig*j + k` for output
    sample `p + new*j` (rates divided by their gcd); the input is padded by `width` on the left.
    The formula is torchaudio.functional's, so the output matches it (tests/test_audio.py)
    without importing torch into every Ray Data worker (2.5 s each).
    """
    g = math.gcd(orig_hz, new_hz)
    orig, new = orig_hz // g, new_hz // g
    base = min(orig, new) * RESAMPLE_ROLLOFF
    width = math.ceil(filter_width * orig / base)
    t = np.arange(0, -new, -1)[:, None] / new + np.arange(-width, width + orig)[None] / orig
    t = np.clip(t * base, -filter_width, filter_width)
    beta = RESAMPLE_KAISER_BETA
    window = np.i0(beta * np.sqrt(1 - (t / filter_width) ** 2)) / np.i0(beta)
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(t == 0, 1.0, np.sin(t) / t)
    return sinc * window * (base / orig), width


@dataclass(frozen=True)
class _ResamplePlan:
    """How to apply the kernel: band by band (large orig/g) or phase by phase (small)."""

    orig: int  # source rate / gcd: input samples per frame
    new: int  # target rate / gcd: output samples per frame
    width: int  # left padding of the input
    bands: tuple[
        tuple[int, int, int, int, np.ndarray], ...
    ]  # (p0, p1, lo, hi, taps (hi-lo, p1-p0))
    phases: tuple[tuple[np.ndarray, ...], ...]  # phases[p][r] = kernel[p, r::orig]

    @property
    def span(self) -> int:
        """The kernel's length in input samples."""
        return 2 * self.width + self.orig


# Below this many (phase, offset) pairs, one np.correlate per pair is cheapest.
MAX_POLYPHASE_PAIRS = 64


@functools.lru_cache(maxsize=64)
def _resample_plan(orig_hz: int, new_hz: int, filter_width: int) -> _ResamplePlan:
    """Cuts the kernel so that no time is spent on its zero taps.

    torchaudio convolves every phase with a kernel spanning (orig/g + 2 width) input samples,
    but each phase's filter is non-zero over only ~2 width of them: for 44.1 -> 16 kHz that is
    535 multiplications per output sample where ~94 matter. Phases are grouped into bands of
    neighbours and each band multiplies only its own non-zero columns.
    """
    kernel, width = sinc_kernel(orig_hz, new_hz, filter_width)
    new, span = kernel.shape
    orig = span - 2 * width
    if new * orig <= MAX_POLYPHASE_PAIRS:
        phases = tuple(
            tuple(np.ascontiguousarray(kernel[p, r::orig], np.float32) for r in range(orig))
            for p in range(new)
        )
        return _ResamplePlan(orig, new, width, (), phases)
    group = min(new, max(1, round(2 * width * new / orig)))
    significant = np.abs(kernel) > 1e-9 * np.abs(kernel).max()
    bands = []
    for p0 in range(0, new, group):
        p1 = min(p0 + group, new)
        taps = np.flatnonzero(significant[p0:p1].any(axis=0))
        lo, hi = int(taps[0]), int(taps[-1]) + 1
        bands.append((p0, p1, lo, hi, np.ascontiguousarray(kernel[p0:p1, lo:hi].T, np.float32)))
    return _ResamplePlan(orig, new, width, tuple(bands), ())


def resample(audio: np.ndarray, orig_hz: int, new_hz: int, filter_width: int = 16) -> np.ndarray:
    """Band-limited sinc resampling of a mono float32 signal to ceil(n * new / orig) samples.

    The same filter and output as torchaudio.functional.resample with
    `resampling_method="sinc_interp_kaiser"`, applied without multiplying zeros.
    """
    orig_hz = resample_source_rate(orig_hz, new_hz)
    if orig_hz == new_hz or audio.size == 0:
        return audio
    plan = _resample_plan(orig_hz, new_hz, filter_width)
    padded = np.pad(np.asarray(audio, dtype=np.float32), (plan.width, plan.width + plan.orig))
    frames = (padded.size - plan.span) // plan.orig + 1
    out = np.empty((frames, plan.new), dtype=np.float32)  # output sample p + new*j at [j, p]
    if plan.phases:
        # out[j, p] = sum_r sum_i kernel[p, orig*i + r] * padded[orig*(j + i) + r]
        streams = [padded[r :: plan.orig] for r in range(plan.orig)]
        for p, taps_by_offset in enumerate(plan.phases):
            out[:, p] = sum(
                np.correlate(streams[r][: frames + taps.size - 1], taps, mode="valid")
                for r, taps in enumerate(taps_by_offset)
            )
    else:
        # Frame j is padded[orig*j : orig*j + span], a strided view (no copy).
        framed = np.lib.stride_tricks.as_strided(
            padded, (frames, plan.span), (plan.orig * padded.itemsize, padded.itemsize),
            writeable=False,
        )  # fmt: skip
        for p0, p1, lo, hi, taps in plan.bands:
            out[:, p0:p1] = framed[:, lo:hi] @ taps
    return out.reshape(-1)[: math.ceil(plan.new * audio.size / plan.orig)]


# ---------------------------------------------------------------------------------------------
# Shaping


def trim_silence(audio: np.ndarray, threshold_db: float) -> np.ndarray:
    """Drops leading and trailing samples quieter than `threshold_db` (dBFS)."""
    loud = np.flatnonzero(np.abs(audio) > db_to_amplitude(threshold_db))
    if loud.size == 0:
        return audio[:0]
    return audio[loud[0] : loud[-1] + 1]


def crop_offsets(
    length: int, clip_samples: int, crop: str, rng: np.random.Generator | None = None
) -> list[int]:
    """Start offsets of the clips cut from a signal of `length` samples.

    `windows` cuts consecutive, non-overlapping clips and keeps a last partial one when it holds
    at least half a clip (it is padded later).
    """
    spare = max(length - clip_samples, 0)
    if crop == "start":
        return [0]
    if crop == "center":
        return [spare // 2]
    if crop == "random":
        rng = rng if rng is not None else np.random.default_rng(0)
        return [int(rng.integers(0, spare + 1))]
    if crop == "windows":
        full = max(length // clip_samples, 1)
        offsets = [i * clip_samples for i in range(full)]
        tail = length - full * clip_samples
        if length >= clip_samples and tail >= clip_samples // 2:
            offsets.append(full * clip_samples)
        return offsets
    raise ValueError(f"unknown crop mode {crop!r}")


def fit_length(audio: np.ndarray, clip_samples: int, pad: str) -> np.ndarray:
    """Crops or zero-pads to exactly `clip_samples`; pad `none` refuses a short signal."""
    if audio.size >= clip_samples:
        return audio[:clip_samples]
    missing = clip_samples - audio.size
    if pad == "none":
        raise Rejected("too_short", f"{audio.size} samples, a clip needs {clip_samples}")
    before = missing // 2 if pad == "center" else 0
    return np.pad(audio, (before, missing - before))


def normalize(audio: np.ndarray, mode: str, peak_target: float, rms_target_db: float) -> np.ndarray:
    """Scales a non-silent signal into [-1, 1] by its peak or its RMS (peak-capped)."""
    peak = float(np.max(np.abs(audio)))
    if peak == 0.0:
        return audio.astype(np.float32)
    if mode == "peak":
        gain = peak_target / peak
    elif mode == "rms":
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        gain = min(db_to_amplitude(rms_target_db) / rms, peak_target / peak)
    else:
        raise ValueError(f"unknown normalize mode {mode!r}")
    scaled = np.asarray(audio, dtype=np.float32) * np.float32(gain)
    return np.clip(scaled, -1.0, 1.0, out=scaled)


# ---------------------------------------------------------------------------------------------
# One file, end to end


@contextmanager
def _timed(timings: dict[str, float] | None, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


class _ErrorRecordingReader:
    """A file wrapper that remembers the I/O error libsndfile's read callback swallows.

    soundfile's callbacks turn an exception into "0 bytes read", so a storage failure in the
    middle of a file would otherwise look like a short file.
    """

    def __init__(self, inner: BinaryIO):
        self._inner = inner
        self.error: OSError | None = None

    def _recorded(self, call, failed, *args):
        try:
            return call(*args)
        except OSError as error:
            # Answer as end-of-file (what libsndfile would make of it anyway) and keep the
            # error for raise_if_failed, rather than raise through the C callback.
            self.error = self.error or error
            return failed

    def read(self, size: int = -1) -> bytes:
        return self._recorded(self._inner.read, b"", size)

    def readinto(self, buffer) -> int:
        return self._recorded(self._inner.readinto, 0, buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._recorded(self._inner.seek, -1, offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error


def resample_alignment(orig_hz: int, new_hz: int, filter_width: int) -> tuple[int, int, int]:
    """(rate, unit, reach) for reading part of a file at `orig_hz`.

    `rate` is the rate resampling will treat the source as; input offsets that are multiples of
    `unit` frames land exactly on output samples; the filter looks `reach` frames either side.
    """
    rate = resample_source_rate(orig_hz, new_hz)
    plan = _resample_plan(rate, new_hz, filter_width)
    return rate, plan.orig, plan.width


def clips_from_file(
    file: BinaryIO,
    size_bytes: int,
    cfg: PrepareConfig,
    key: str,
    timings: dict[str, float] | None = None,
) -> Decoded:
    """Decodes one source file into normalised clips of exactly `cfg.clip_samples`.

    Only the frames a clip needs (and the resampling filter's reach either side) are decoded,
    unless the whole file matters (windows, trim).

    Args:
        file: the file's bytes, seekable and positioned at the start.
        size_bytes: the file's size, to spot truncated headers.
        cfg: the prepare configuration.
        key: a stable name for the file (its relative path), seeding its random crop.
        timings: if given, seconds spent per stage (decode, resample, crop_normalize) are
            added to it.

    Raises:
        Rejected: the file yields no clip; `reason` says why.
        OSError: reading the file's bytes failed (the storage's fault, not the file's).
    """
    if size_bytes == 0:
        raise Rejected("empty", "the file has 0 bytes")
    reader = _ErrorRecordingReader(file)
    with _timed(timings, "decode"):
        truncation = container_truncation(reader.read(HEADER_PEEK_BYTES), size_bytes)
        if truncation:
            raise Rejected("decode_error", truncation)
        reader.seek(0)
        try:
            sound = open_audio(reader)
        except Rejected:
            reader.raise_if_failed()
            raise
        source_hz, header_frames = sound.samplerate, max(sound.frames, 0)
        if header_frames == 0:
            raise Rejected("empty", "the file holds no audio frames")
        if header_frames < cfg.min_source_seconds * source_hz:
            raise Rejected("too_short", f"{header_frames} frames at {source_hz} Hz")
        rate, unit, reach = resample_alignment(
            source_hz, cfg.sample_rate_hz, cfg.resample_filter_width
        )

        whole_file = cfg.crop == "windows" or cfg.trim_silence
        if whole_file:
            limit = min(int(cfg.max_source_seconds * source_hz), MAX_DECODE_FRAMES)
            start, left, count = 0, 0, min(header_frames, limit)
        else:
            clip_frames = math.ceil(cfg.clip_seconds * rate)
            spare = max(header_frames - clip_frames, 0)
            start = {
                "start": 0,
                "center": spare // 2,
                "random": int(stable_rng(cfg.seed, key).integers(0, spare + 1)),
            }[cfg.crop]
            # The filter needs real audio either side of the clip, not the zeros a cut gives;
            # offsets in whole units keep the dropped margin an exact number of output samples.
            start -= start % unit
            left = min(start, math.ceil(reach / unit) * unit)
            count = left + clip_frames + reach + unit
        audio = read_mono(sound, start - left, count)
        reader.raise_if_failed()
        expected = min(count, header_frames - (start - left))
        if audio.size < expected and sound.format != "MP3":  # an MP3's frame count is a guess
            raise Rejected(
                "decode_error",
                f"truncated: {audio.size} of {expected} frames could be decoded",
            )
    if audio.size == 0:
        raise Rejected("empty", "no audio frames could be decoded")
    if not np.all(np.isfinite(audio)):
        raise Rejected("non_finite", "the samples include NaN or infinity")

    with _timed(timings, "resample"):
        audio = resample(audio, source_hz, cfg.sample_rate_hz, cfg.resample_filter_width)
        audio = audio[left * cfg.sample_rate_hz // rate :]

    with _timed(timings, "crop_normalize"):
        silence = db_to_amplitude(cfg.silence_threshold_db)
        if cfg.trim_silence:
            audio = trim_silence(audio, cfg.silence_threshold_db)
        if audio.size == 0 or float(np.max(np.abs(audio))) <= silence:
            raise Rejected("silent", f"no sample above {cfg.silence_threshold_db:g} dBFS")
        if audio.size < cfg.min_source_seconds * cfg.sample_rate_hz:
            raise Rejected("too_short", f"{audio.size / cfg.sample_rate_hz:.3f} s of sound")

        offsets = [0]
        if whole_file:
            rng = stable_rng(cfg.seed, key)
            offsets = crop_offsets(audio.size, cfg.clip_samples, cfg.crop, rng)
            if cfg.pad == "none" and len(offsets) > 1:
                # A partial last window cannot be padded: keep the full ones.
                offsets = [o for o in offsets if o + cfg.clip_samples <= audio.size]
        clips = []
        for window, offset in enumerate(offsets):
            clip = fit_length(audio[offset : offset + cfg.clip_samples], cfg.clip_samples, cfg.pad)
            if float(np.max(np.abs(clip))) <= silence:
                continue  # a silent stretch inside a longer recording is no training example
            clips.append(
                (window, normalize(clip, cfg.normalize, cfg.peak_target, cfg.rms_target_db))
            )
        if not clips:
            raise Rejected(
                "silent", "the cropped clip is silent (try --trim-silence or --crop center)"
            )
    return Decoded(source_hz, header_frames / source_hz, clips)


def _short(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
