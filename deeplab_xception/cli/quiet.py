"""Keeps native libraries' log lines off the terminal unless `--verbose`.

TensorFlow, XLA, gRPC and libpng write to file descriptor 2 from C++, some
through absl logging, which no environment variable silences ("All log
messages before absl::InitializeLog() ...", "Number of eligible GPUs ...").
So descriptor 2 becomes a pipe that a thread copies to the terminal, line by
line, leaving out such lines; Python's own sys.stderr (messages, progress
bars) keeps writing to the terminal directly. Fatal lines ("F...") and
anything unrecognized pass through.
"""

import atexit
import logging
import os
import re
import sys
import threading

NOISE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\]"  # absl: I0000 00:00:17.5 123 x.cc:67]
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] "  # TSL: 2026-01-01 10:00:00.1: I x.cc:31]
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|To enable the following instructions: .* rebuild TensorFlow"  # cpu_feature_guard's 2nd line
    rb"|libpng (?:error|warning): "  # a bad PNG; read_image reports it in one line
    rb"|\[ WARN:\d+@[\d.]+\] global )")  # OpenCV's decoders


def quiet_environment():
    """Log levels for the libraries that read them, set before they are imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


def filter_native_stderr():
    """Replaces descriptor 2 with the filtering pipe (see the module docstring)."""
    terminal = os.dup(2)
    sys.stderr.flush()
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding=sys.stderr.encoding,
                           errors="backslashreplace")
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_copy_lines, args=(read_end, terminal), daemon=True)
    thread.start()

    def restore():
        os.dup2(terminal, 2)  # closes the pipe's last write end here: the thread sees its end
        thread.join(timeout=2)

    atexit.register(restore)


def _copy_lines(read_end, terminal):
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line + b"\n" for line in lines if not NOISE.match(line)]
            if kept:
                os.write(terminal, b"".join(kept))
        if pending and not NOISE.match(pending):
            os.write(terminal, pending)
