"""Pure audio transforms: decode, mix to mono, resample, trim, crop or pad, normalise.

Every function takes what it needs as arguments and touches no global state except caches of
resampling kernels keyed on every argument. Ray Data calls `clips_from_file` on each source
file; tests call the pieces directly.

A file is read forward through `Resampled`, block by block, so memory stays small however long
the file is, and the resampler's arithmetic is exact (integers held in float64), so the same
file and configuration give the same bytes on any machine, with any number of BLAS threads.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import struct
import sys
import time
from collections.abc import Callable, Iterator
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
    "not_a_file",
    "broken_link",
    "link_loop",
    "unsafe_path",
    "bad_row",
)

# Sources outside these bounds are almost certainly a corrupt header, not real audio.
MIN_SOURCE_RATE_HZ = 1000
MAX_SOURCE_RATE_HZ = 768_000
MAX_CHANNELS = 256
# Frames decoded per read at most (6 s at 44.1 kHz): the multichannel buffer never exceeds
# this, whatever the header says or however long the file is.
READ_BLOCK_FRAMES = 262_144
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
    """What one source file yields: its original rate and length, its clips by window, and
    whether it was cut: sound went on past the last window `max_windows` lets `windows` keep,
    or past MAX_MP3_FRAMES; then `seconds_left_out` is how much of the file lies after the
    last sample used."""

    source_sample_rate_hz: int
    source_seconds: float
    clips: list[tuple[int, np.ndarray]]  # (window index, (clip_samples,) float32)
    cut: bool = False
    seconds_left_out: float = 0.0


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


def _libsndfile_message(error: BaseException) -> str:
    """libsndfile's reason, without soundfile's "Error opening <object at 0x...>:" prefix.

    For a file in memory, "does not exist or is not a regular file (possibly a pipe?)" is what
    libsndfile says when its MPEG decoder found no valid frame, not anything about the file.
    """
    text = _short(error)
    text = text.split(">: ", 1)[-1] if text.startswith("Error opening <") else text
    if "possibly a pipe" in text:
        return "no valid audio frame found"
    return text.rstrip(".")


def open_audio(file: BinaryIO) -> sf.SoundFile:
    """Opens a file-like object with libsndfile, turning every failure into a Rejected."""
    try:
        sound = sf.SoundFile(file)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, EOFError) as error:
        detail = f"not a readable audio file ({_libsndfile_message(error)})"
        raise Rejected("decode_error", detail) from None
    if not MIN_SOURCE_RATE_HZ <= sound.samplerate <= MAX_SOURCE_RATE_HZ:
        raise Rejected("unsupported", f"sample rate {sound.samplerate} Hz is out of range")
    if not 1 <= sound.channels <= MAX_CHANNELS:
        raise Rejected("unsupported", f"{sound.channels} channels is out of range")
    return sound


def read_mono(sound: sf.SoundFile, count: int, out: np.ndarray | None = None) -> np.ndarray:
    """Reads up to `count` frames (at most READ_BLOCK_FRAMES) from where the file is, as mono
    float32, into the start of `out` if given (it must hold them); returns what was read.

    16-bit PCM is read as it is stored and scaled here, as libsndfile would (x / 32768), which
    skips libsndfile's slower per-sample conversion.
    """
    as_int16 = sound.subtype == "PCM_16"
    count = min(count, READ_BLOCK_FRAMES)
    try:
        block = sound.read(count, dtype="int16" if as_int16 else "float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError) as error:
        raise Rejected("decode_error", f"decoding failed ({_libsndfile_message(error)})") from None
    mono = np.empty(len(block), dtype=np.float32) if out is None else out[: len(block)]
    if block.shape[1] == 1:
        np.copyto(mono, block[:, 0], casting="safe")
    else:
        block.mean(axis=1, dtype=np.float32, out=mono)  # (frames, channels) -> (frames,)
    if as_int16:
        mono *= np.float32(1 / 32768)
    return mono


# An MP3 is decoded in one read of at most this many frames (12.7 min at 44.1 kHz; 256 MiB as
# stereo float32 while it is mixed down), see WholeMp3.
MAX_MP3_FRAMES = 1 << 25


class WholeMp3:
    """An MP3 decoded in one read, then read and seeked in memory like a sf.SoundFile.

    libsndfile 1.2.2 (soundfile 0.14's) returns garbled samples for an MP3 read in more than one
    call, or after a seek: 4 s read 1,000 frames at a time differ from one read by up to 0.3 after
    the first 5,000 frames (tests/test_audio.py). One read is right, so an MP3 gets one read, of
    at most MAX_MP3_FRAMES; what lies past that is counted as left out.
    """

    format = "MP3"
    subtype = "FLOAT"
    channels = 1

    def __init__(self, sound: sf.SoundFile):
        self.samplerate = sound.samplerate
        estimate = max(sound.frames, 0)
        try:
            block = sound.read(min(estimate, MAX_MP3_FRAMES), dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, ValueError) as error:
            raise Rejected(
                "decode_error", f"decoding failed ({_libsndfile_message(error)})"
            ) from None
        self._mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        self.frames = len(self._mono)
        # Frames past the cap (the header's count is an estimate for an MP3).
        self.frames_left_out = (
            max(estimate - self.frames, 0) if self.frames == MAX_MP3_FRAMES else 0
        )
        self._position = 0

    def seek(self, frame: int) -> int:
        self._position = min(max(frame, 0), self.frames)
        return self._position

    def read(self, frames: int, dtype: str = "float32", always_2d: bool = True) -> np.ndarray:
        part = self._mono[self._position : self._position + frames]
        self._position += len(part)
        return part[:, None]


@contextmanager
def decoder_output_hidden(hidden: bool = True) -> Iterator[None]:
    """Sends what C decoders print to stderr (libmpg123's "Giving up searching valid MPEG
    header...", for one) to /dev/null meanwhile: a bad file is a reject row, not console noise."""
    if not hidden:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
# The resampler computes in integers, exactly (see _ResamplePlan): samples are scaled so that a
# segment's peak is just under 2^SAMPLE_BITS and rounded (-156 dB relative to that peak), taps
# get the bits that are left of float64's 53 (about 24: -150 dB).
SAMPLE_BITS = 26
FLOAT64_EXACT_BITS = 53


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
    """How to apply the kernel: band by band (large orig/g) or phase by phase (small).

    Taps are integers (the kernel times 2^tap_bits, rounded) held in float64, and so are the
    samples they multiply. Every product and every partial sum is then an integer below 2^53,
    which float64 holds exactly: the result is the same whatever order a BLAS library adds in,
    so it does not depend on the number of threads or on the CPU's matrix kernel.
    """

    orig: int  # source rate / gcd: input samples per frame
    new: int  # target rate / gcd: output samples per frame
    width: int  # left padding of the input
    tap_bits: int  # taps are kernel * 2^tap_bits, rounded
    bands: tuple[
        tuple[int, int, int, int, np.ndarray], ...
    ]  # (p0, p1, lo, hi, taps (hi-lo, p1-p0))
    phases: tuple[tuple[np.ndarray, ...], ...]  # phases[p][r] = taps[p, r::orig]

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
    # One output sample sums |taps| x 2^SAMPLE_BITS at most; one bit to spare for the rounding.
    largest_sum = float(np.abs(kernel).sum(axis=1).max())
    tap_bits = FLOAT64_EXACT_BITS - 1 - SAMPLE_BITS - math.ceil(math.log2(largest_sum)) - 1
    taps = np.rint(kernel * math.ldexp(1.0, tap_bits))
    if new * orig <= MAX_POLYPHASE_PAIRS:
        phases = tuple(
            tuple(np.ascontiguousarray(taps[p, r::orig]) for r in range(orig)) for p in range(new)
        )
        return _ResamplePlan(orig, new, width, tap_bits, (), phases)
    group = min(new, max(1, round(2 * width * new / orig)))
    bands = []
    for p0 in range(0, new, group):
        p1 = min(p0 + group, new)
        columns = np.flatnonzero(np.any(taps[p0:p1] != 0, axis=0))
        lo, hi = int(columns[0]), int(columns[-1]) + 1
        bands.append((p0, p1, lo, hi, np.ascontiguousarray(taps[p0:p1, lo:hi].T)))
    return _ResamplePlan(orig, new, width, tap_bits, tuple(bands), ())


# Input samples resampled together (as float64, 256 KB): they stay in the CPU's cache, and
# memory is reused instead of fresh pages being mapped for every file.
SAMPLES_PER_SLAB = 32_768


def _resample_frames(padded: np.ndarray, plan: _ResamplePlan, frames: int) -> np.ndarray:
    """Output frames 0..frames-1 of a padded input (frame j reads padded[orig*j : orig*j +
    span]), as (frames, new) float32, computed exactly (see _ResamplePlan)."""
    out = np.zeros((max(frames, 0), plan.new), dtype=np.float32)  # sample p + new*j at [j, p]
    peak = peak_of(padded) if padded.size else 0.0
    if frames <= 0 or peak == 0.0:
        return out
    # Power-of-two scales put the peak just under 2^SAMPLE_BITS and undo it: exact as well.
    # (Scalars, not np.ldexp, which is 40 times slower.)
    shift = SAMPLE_BITS - math.frexp(peak)[1]
    scale, unscale = math.ldexp(1.0, shift), math.ldexp(1.0, -(shift + plan.tap_bits))
    per_slab = max(1, SAMPLES_PER_SLAB // plan.orig)
    sums = np.empty((per_slab, plan.new), dtype=np.float64)
    for first in range(0, frames, per_slab):
        count = min(per_slab, frames - first)
        piece = padded[plan.orig * first : plan.orig * (first + count - 1) + plan.span]
        samples = np.multiply(piece, scale, dtype=np.float64)
        np.rint(samples, out=samples)
        if plan.phases:
            # sums[j, p] = sum_r sum_i taps[p, orig*i + r] * samples[orig*(j + i) + r]
            streams = [samples[r :: plan.orig] for r in range(plan.orig)]
            for p, taps_by_offset in enumerate(plan.phases):
                sums[:count, p] = sum(
                    np.correlate(streams[r][: count + taps.size - 1], taps, mode="valid")
                    for r, taps in enumerate(taps_by_offset)
                )
        else:
            # Frame j is samples[orig*j : orig*j + span], a strided view (no copy).
            framed = np.lib.stride_tricks.as_strided(
                samples, (count, plan.span), (plan.orig * samples.itemsize, samples.itemsize),
                writeable=False,
            )  # fmt: skip
            for p0, p1, lo, hi, taps in plan.bands:
                np.matmul(framed[:, lo:hi], taps, out=sums[:count, p0:p1])
        np.multiply(sums[:count], unscale, out=out[first : first + count], casting="same_kind")
    return out


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
    out = _resample_frames(padded, plan, frames)
    return out.reshape(-1)[: math.ceil(plan.new * audio.size / plan.orig)]


@contextmanager
def _timed(timings: dict[str, float] | None, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


class Resampled:
    """A sound file's mono signal at `new_hz`, read forward from any output sample.

    Only the source frames the output read so far needs are decoded (and the filter's reach
    either side, so a clip cut from the middle has no click), at most READ_BLOCK_FRAMES at a
    time: memory stays small however long the file is. Samples are the same as resampling the
    whole file (up to the rounding of _resample_frames) and then cutting.
    """

    def __init__(
        self,
        sound: sf.SoundFile,
        new_hz: int,
        filter_width: int,
        start: int = 0,
        check_io: Callable[[], None] = lambda: None,
        timings: dict[str, float] | None = None,
    ):
        """
        Args:
            sound: an open file; it is seeked and read, so one Resampled uses it at a time.
            new_hz: the output rate.
            filter_width: the sinc filter's half-width in zero crossings.
            start: the output sample the first read() returns.
            check_io: raises the storage error a read may have hidden (_ErrorRecordingReader).
            timings: if given, seconds spent decoding and resampling are added to it.
        """
        self._sound, self._check_io, self._timings = sound, check_io, timings
        self._header_frames = max(sound.frames, 0)
        rate = resample_source_rate(sound.samplerate, new_hz)
        self._plan = None if rate == new_hz else _resample_plan(rate, new_hz, filter_width)
        orig, new, width = (1, 1, 0)
        if self._plan is not None:
            orig, new, width = self._plan.orig, self._plan.new, self._plan.width
        # Output sample `start` is in frame `start // new`, which reads the padded input from
        # orig * frame on, i.e. source frames from orig * frame - width (zeros before 0).
        frame = start // new
        first = frame * orig - width
        self._skip = start - frame * new  # outputs of the first frame that come before start
        self._buffer = np.zeros(max(-first, 0), dtype=np.float32)  # padded input, not yet used
        self._next_source = max(first, 0)  # the next source frame to decode
        self._ended = self._next_source >= self._header_frames  # starts past the end
        if self._ended:
            self._next_source = self._header_frames
        self._total_out: int | None = None  # known once the file's end is reached
        self._frame = frame  # the next output frame to compute
        self._pending = np.zeros(0, dtype=np.float32)  # computed, not yet read
        self.position = start  # the output index of the next sample read() returns
        if not self._ended:  # another Resampled may have moved the file on
            try:
                sound.seek(self._next_source)
            except (sf.SoundFileError, RuntimeError, ValueError) as error:
                reason = _libsndfile_message(error)
                raise Rejected("decode_error", f"seeking failed ({reason})") from None
            check_io()
        if self._ended:
            self._finish_source()

    def read(self, count: int) -> np.ndarray:
        """The next `count` output samples; fewer only at the end of the file."""
        while self._pending.size < count and self._produce(count - self._pending.size):
            pass
        out, self._pending = self._pending[:count], self._pending[count:]
        self.position += out.size
        return out

    def skip_quiet(self, threshold: float) -> int | None:
        """Moves to the first sample louder than `threshold`; returns its index, or None when
        there is none before the end of the file."""
        while True:
            block = self.read(READ_BLOCK_FRAMES)
            if block.size == 0:
                return None
            loud = _loud(block, threshold)
            if loud.size:
                self._pending = np.concatenate([block[loud[0] :], self._pending])
                self.position -= block.size - loud[0]
                return self.position

    def end_of_sound(self, threshold: float, enough: float = math.inf) -> int:
        """Reads on to one past the last sample louder than `threshold` (the read position if
        there is none), or stops once that is at least `enough`."""
        end = self.position
        while end < enough:
            first = self.position
            block = self.read(READ_BLOCK_FRAMES)
            if block.size == 0:
                break
            loud = _loud(block, threshold)
            if loud.size:
                end = first + int(loud[-1]) + 1
        return end

    def _produce(self, wanted: int) -> bool:
        """Decodes and resamples at least one more block; False once nothing is left."""
        plan = self._plan
        if plan is None:
            if self._ended:
                return False
            size = self._pending.size
            self._pending = self._decode(wanted, keep=self._pending)
            return self._pending.size > size
        if not self._ended:
            frames_wanted = -(-(wanted + self._skip) // plan.new)
            needed = plan.orig * (frames_wanted - 1) + plan.span - self._buffer.size
            self._buffer = self._decode(max(needed, plan.span), keep=self._buffer)
            if self._ended:
                self._finish_source()
        frames = (self._buffer.size - plan.span) // plan.orig + 1
        if self._total_out is not None:  # the end: no frame past the last output sample
            frames = min(frames, -(-self._total_out // plan.new) - self._frame)
        if frames <= 0:
            return not self._ended
        with _timed(self._timings, "resample"):
            out = _resample_frames(self._buffer, plan, frames).reshape(-1)
        if self._total_out is not None:
            out = out[: self._total_out - self._frame * plan.new]
        self._pending = _joined(self._pending, out[self._skip :])
        self._skip = 0
        self._frame += frames
        self._buffer = self._buffer[plan.orig * frames :]
        return True

    def _decode(self, count: int, keep: np.ndarray) -> np.ndarray:
        """`keep` followed by the next `count` source frames (at most a block) as mono; fewer,
        and the end marked, when the file has no more."""
        joined = np.empty(keep.size + min(count, READ_BLOCK_FRAMES), dtype=np.float32)
        joined[: keep.size] = keep
        with _timed(self._timings, "decode"):
            block = read_mono(self._sound, count, out=joined[keep.size :])
            self._check_io()
        if not np.all(np.isfinite(block)):
            raise Rejected("non_finite", "the samples include NaN or infinity")
        self._next_source += block.size
        if block.size < min(count, READ_BLOCK_FRAMES):
            # (An MP3 comes as WholeMp3, whose frame count is what it decoded, not a guess.)
            if self._next_source < self._header_frames:
                raise Rejected(
                    "decode_error",
                    f"truncated: {self._next_source} of the {self._header_frames} frames the "
                    "header declares could be decoded",
                )
            self._ended = True
        return joined[: keep.size + block.size]

    def _finish_source(self) -> None:
        """The end of the file: the right padding, and the output's true length."""
        plan = self._plan
        if plan is not None:
            end = np.zeros(plan.width + plan.orig, dtype=np.float32)
            self._buffer = _joined(self._buffer, end)
            self._total_out = math.ceil(plan.new * self._next_source / plan.orig)


def _loud(samples: np.ndarray, threshold: float) -> np.ndarray:
    """The indices of the samples louder than `threshold` (an amplitude)."""
    return np.flatnonzero(np.abs(samples) > threshold)


def _joined(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """first + second, without copying when one of them is empty (the usual case here)."""
    if not first.size:
        return second
    return np.concatenate([first, second]) if second.size else first


# ---------------------------------------------------------------------------------------------
# Shaping


def fit_length(audio: np.ndarray, clip_samples: int, pad: str) -> np.ndarray:
    """Crops or zero-pads to exactly `clip_samples`; pad `none` refuses a short signal."""
    if audio.size >= clip_samples:
        return audio[:clip_samples]
    missing = clip_samples - audio.size
    if pad == "none":
        raise Rejected("too_short", f"{audio.size} samples, a clip needs {clip_samples}")
    before = missing // 2 if pad == "center" else 0
    return np.pad(audio, (before, missing - before))


def peak_of(samples: np.ndarray) -> float:
    """The largest |sample| of a non-empty signal, without filling a buffer of |samples|."""
    return max(float(np.max(samples)), -float(np.min(samples)))


def normalize(audio: np.ndarray, mode: str, peak_target: float, rms_target_db: float) -> np.ndarray:
    """Scales a non-silent signal into [-1, 1] by its peak or its RMS (peak-capped)."""
    peak = peak_of(audio)
    if peak == 0.0:
        return audio.astype(np.float32)
    if mode == "peak":
        gain = peak_target / peak
    elif mode == "rms":
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        gain = min(db_to_amplitude(rms_target_db) / rms, peak_target / peak)
    else:
        raise ValueError(f"unknown normalize mode {mode!r}")
    scaled = np.multiply(audio, np.float32(gain), dtype=np.float32)
    return np.clip(scaled, -1.0, 1.0, out=scaled)


def _finish(audio: np.ndarray, cfg: PrepareConfig) -> np.ndarray:
    """A cut piece of sound made into a training clip: padded, then normalised."""
    clip = fit_length(audio, cfg.clip_samples, cfg.pad)
    return normalize(clip, cfg.normalize, cfg.peak_target, cfg.rms_target_db)


def _one_clip(
    stream_at: Callable[[int], Resampled], cfg: PrepareConfig, key: str, estimated: int
) -> np.ndarray:
    """The clip of `start`, `center` or `random`, of the whole signal or of its sound only
    (trim_silence: from the first to the last sample above the silence threshold)."""
    threshold = db_to_amplitude(cfg.silence_threshold_db)
    clip_samples = cfg.clip_samples
    start, length = 0, estimated
    if cfg.trim_silence:
        scan = stream_at(0)
        start = scan.skip_quiet(threshold)
        if start is None:
            raise Rejected("silent", f"no sample above {cfg.silence_threshold_db:g} dBFS")
        # A clip from the start needs no more than to know the sound lasts a clip.
        enough = start + clip_samples if cfg.crop == "start" else math.inf
        length = scan.end_of_sound(threshold, enough) - start
        if length < cfg.min_source_seconds * cfg.sample_rate_hz:
            raise Rejected("too_short", f"{length / cfg.sample_rate_hz:.3f} s of sound")
    spare = max(length - clip_samples, 0)
    offset = 0
    if cfg.crop == "center":
        offset = spare // 2
    elif cfg.crop == "random":
        offset = int(stable_rng(cfg.seed, key).integers(0, spare + 1))
    audio = stream_at(start + offset).read(min(clip_samples, length - offset))
    if audio.size == 0 or peak_of(audio) <= threshold:
        raise Rejected(
            "silent",
            f"the clip has no sample above {cfg.silence_threshold_db:g} dBFS "
            "(try --trim-silence or --crop center)",
        )
    return _finish(audio, cfg)


def _pieces(stream: Resampled, size: int) -> Iterator[np.ndarray]:
    """The rest of a stream in pieces of `size` samples (the last one shorter), read a few
    together: one resampling call per second or so of audio, not per piece."""
    together = max(1, 2**16 // size)
    while (chunk := stream.read(size * together)).size:
        for first in range(0, chunk.size, size):
            yield chunk[first : first + size]


def _windows(
    stream: Resampled, cfg: PrepareConfig, estimated: int
) -> tuple[list[tuple[int, np.ndarray]], bool, int]:
    """Consecutive, non-overlapping clips of the signal (of its sound only, with trim_silence),
    read in one pass; returns them, whether sound went on past the last window `max_windows`
    allows, and then how many samples of the file follow that window.

    Window i covers [start + i*C, start + (i+1)*C) of a sound of length n (C: clip samples).
    The full windows are kept, and a last partial one if it holds at least half a clip (padded;
    not with pad `none`); a sound shorter than a clip is one padded clip. Windows with no
    sample above the silence threshold are dropped: a pause in a recording is no example.
    """
    threshold = db_to_amplitude(cfg.silence_threshold_db)
    clip_samples = cfg.clip_samples
    limit = cfg.max_windows or math.inf
    start = 0
    if cfg.trim_silence:
        start = stream.skip_quiet(threshold)
        if start is None:
            raise Rejected("silent", f"no sample above {cfg.silence_threshold_db:g} dBFS")
    # One past the last sample of the sound so far: the last loud one with trim_silence, else
    # the last one read. A window is full once the sound reaches its end.
    sound_end = start
    clips: list[tuple[int, np.ndarray]] = []
    held = None  # (index, offset, samples): the last window with sound, not yet known full
    index, cut = 0, False
    for window in _pieces(stream, clip_samples):
        offset = start + index * clip_samples
        loud = _loud(window, threshold)
        if not cfg.trim_silence:
            sound_end = offset + window.size
        elif loud.size:
            sound_end = offset + int(loud[-1]) + 1
        if held is not None and sound_end >= held[1] + clip_samples:
            clips.append((held[0], _finish(held[2], cfg)))
            held = None
        if loud.size:
            if index >= limit:
                cut = True  # sound goes on past the last window allowed
                break
            if sound_end >= offset + clip_samples:
                clips.append((index, _finish(window, cfg)))
            else:
                held = (index, offset, window)
        index += 1
    length = sound_end - start
    if held is not None:  # the window where the sound ends, part of a clip long
        held_index, held_offset, samples = held
        part = samples[: sound_end - held_offset]
        if held_index == 0:
            clips.append((0, _finish(part, cfg)))  # shorter than a clip (pad none refuses it)
        elif cfg.pad != "none" and length - held_index * clip_samples >= clip_samples // 2:
            clips.append((held_index, _finish(part, cfg)))
    if not cut and length < cfg.min_source_seconds * cfg.sample_rate_hz:
        raise Rejected("too_short", f"{length / cfg.sample_rate_hz:.3f} s of sound")
    if not clips:
        raise Rejected("silent", f"no window has a sample above {cfg.silence_threshold_db:g} dBFS")
    left_out = max(estimated - (start + cfg.max_windows * clip_samples), 0) if cut else 0
    return clips, cut, left_out


# ---------------------------------------------------------------------------------------------
# One file, end to end


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


def clips_from_file(
    file: BinaryIO,
    size_bytes: int,
    cfg: PrepareConfig,
    key: str,
    timings: dict[str, float] | None = None,
) -> Decoded:
    """Decodes one source file into normalised clips of exactly `cfg.clip_samples`.

    Only the frames the clips need (and the resampling filter's reach either side) are
    decoded, except that trim_silence with a center or random crop reads the whole file to
    find where its sound ends; windows reads up to the last window `max_windows` allows.

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
    started = time.perf_counter()
    if size_bytes == 0:
        raise Rejected("empty", "the file has 0 bytes")
    reader = _ErrorRecordingReader(file)
    stage_timings: dict[str, float] = {}
    with _timed(stage_timings, "decode"):
        truncation = container_truncation(reader.read(HEADER_PEEK_BYTES), size_bytes)
        if truncation:
            raise Rejected("decode_error", truncation)
        reader.seek(0)
        try:
            sound = open_audio(reader)
        except Rejected:
            reader.raise_if_failed()
            raise
    source_seconds = max(sound.frames, 0) / max(sound.samplerate, 1)
    if sound.format == "MP3":
        with _timed(stage_timings, "decode"):
            sound = WholeMp3(sound)
            reader.raise_if_failed()
        source_seconds = max(source_seconds, sound.frames / sound.samplerate)
    source_hz, header_frames = sound.samplerate, max(sound.frames, 0)
    if header_frames == 0:
        raise Rejected("empty", "the file holds no audio frames")
    if header_frames < cfg.min_source_seconds * source_hz:
        raise Rejected("too_short", f"{header_frames} frames at {source_hz} Hz")
    rate = resample_source_rate(source_hz, cfg.sample_rate_hz)
    estimated = math.ceil(header_frames * cfg.sample_rate_hz / rate)  # the resampled length

    def stream_at(start: int) -> Resampled:
        return Resampled(
            sound, cfg.sample_rate_hz, cfg.resample_filter_width, start,
            reader.raise_if_failed, stage_timings,
        )  # fmt: skip

    cut, left_out = False, 0
    if cfg.crop == "windows":
        clips, cut, left_out = _windows(stream_at(0), cfg, estimated)
    else:
        clips = [(0, _one_clip(stream_at, cfg, key, estimated))]
    if timings is not None:
        # What decoding and resampling did not take went on finding, cutting and normalising.
        for stage, seconds in stage_timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
        rest = time.perf_counter() - started - sum(stage_timings.values())
        timings["crop_normalize"] = timings.get("crop_normalize", 0.0) + rest
    seconds_left_out = left_out / cfg.sample_rate_hz
    if isinstance(sound, WholeMp3) and sound.frames_left_out:
        cut, seconds_left_out = True, seconds_left_out + sound.frames_left_out / source_hz
    return Decoded(source_hz, source_seconds, clips, cut, seconds_left_out)


def _short(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
