"""TensorBoard scalars without TensorFlow: event files through the `tensorboard` package alone.

tensorboard's own EventFileWriter opens files through `tensorboard.compat.tf`,
which imports TensorFlow wherever it is installed; the records are written
here to a plain file instead, framed by tensorboard's RecordWriter.
"""

import os
import socket
import time

from deeplab_xception.errors import UserError


class ScalarWriter:
    """Appends scalar summaries to a new event file under `logdir`, which TensorBoard shows
    as it shows tf.summary.scalar's."""

    def __init__(self, logdir):
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter
        except ImportError:
            raise UserError("TensorBoard summaries need the tensorboard package "
                            "(pip install tensorboard)") from None
        os.makedirs(logdir, exist_ok=True)
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        name = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}"
        self._records = RecordWriter(open(os.path.join(logdir, name), "wb"))
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event):
        self._records.write(event.SerializeToString())
        self._records.flush()

    def scalars(self, step, values):
        """Writes {tag: float} at `step`, flushed so that TensorBoard sees it at once."""
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=float(value))
                                       for tag, value in values.items()])
        self._write(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self):
        self._records.close()
