"""TensorBoard event files in the run folder: `tensorboard --logdir STORAGE` shows each run (a
sweep's, each trial) with its scalars, its samples as audio and their pictures.

Rank 0 writes them through the run folder's retries, local or on S3. S3 cannot append, so an
event file is rewritten whole at each flush while it holds only scalars (a few hundred bytes a
logged step); once it holds a sample step's audio and pictures, or passes ROLL_BYTES, it is
left as it is and the next flush starts the next file. TensorBoard reads a run folder's event
files in name order, and its names sort by the time the writer started, then by number.

Every writer's first event is a SessionLog START at the step it starts from: TensorBoard then
drops what an earlier writer logged from that step on (steps a crash lost from the
checkpoints), so no curve doubles back.
"""

from __future__ import annotations

import os
import socket
import struct
import time

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from audiogan import samples
from audiogan.runfolder import RunFolder, row_numbers

# An event file of scalars only is rewritten at every flush until it is this large.
ROLL_BYTES = 256 << 10
PNG_COLOUR = 4  # RGBA, as matplotlib saves: TensorBoard's Image.colorspace


class _Sink:
    """What RecordWriter writes to: the current file's bytes, in memory."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        pass


class EventLog:
    """Rank 0's TensorBoard writer for one run folder (`folder`'s root)."""

    def __init__(self, folder: RunFolder, resumed_at: int = 0):
        """`resumed_at`: the step of the checkpoint the run goes on from (0: none)."""
        self.folder = folder
        started = time.time()
        self.prefix = (
            f"events.out.tfevents.{int(started):010d}.{socket.gethostname()}.{os.getpid()}"
        )
        self.number = 0
        self._start_file()
        # Also from step 0: a run restarted before its first checkpoint logs from step 1 again.
        self._write(
            event_pb2.Event(
                wall_time=started,
                step=resumed_at + 1,
                session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
            )
        )

    @property
    def file_name(self) -> str:
        """The event file being written, in the run folder."""
        return f"{self.prefix}.{self.number:04d}"

    def _start_file(self) -> None:
        self.sink, self.media = _Sink(), False
        self.writer = RecordWriter(self.sink)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: event_pb2.Event) -> None:
        self.writer.write(event.SerializeToString())

    def _summary(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
        summary = summary_pb2.Summary(value=values)
        self._write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def scalars(self, step: int, row: dict) -> None:
        """Every number of a metrics.jsonl row but the step, under its own name."""
        values = [
            summary_pb2.Summary.Value(tag=key, simple_value=value)
            for key, value in row_numbers(row).items()
        ]
        self._summary(step, values)

    def audio(self, step: int, clips: list[tuple[str, np.ndarray]], rate_hz: int) -> None:
        """Clips (tag, mono audio in [-1, 1]) as 16-bit WAVs TensorBoard's audio tab plays."""
        values = [
            summary_pb2.Summary.Value(
                tag=tag,
                audio=summary_pb2.Summary.Audio(
                    sample_rate=float(rate_hz),
                    num_channels=1,
                    length_frames=len(clip),
                    encoded_audio_string=samples.wav_bytes(clip, rate_hz),
                    content_type="audio/wav",
                ),
            )
            for tag, clip in clips
        ]
        self._summary(step, values)
        self.media = True

    def image(self, step: int, tag: str, png: bytes) -> None:
        """A PNG as it is (TensorBoard's images tab)."""
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
        image = summary_pb2.Summary.Image(
            height=height, width=width, colorspace=PNG_COLOUR, encoded_image_string=png
        )
        self._summary(step, [summary_pb2.Summary.Value(tag=tag, image=image)])
        self.media = True

    def flush(self) -> None:
        """The current file written whole; the next flush starts a new one if this one holds
        audio or pictures or has grown past ROLL_BYTES."""
        self.folder.write(self.file_name, bytes(self.sink.data))
        if self.media or len(self.sink.data) >= ROLL_BYTES:
            self.number += 1
            self._start_file()
