"""Keeps native libraries' log lines and Python libraries' warnings off the terminal unless `--verbose`.

TensorFlow, XLA, gRPC and libpng write to file descriptor 2 from C++, some
through absl logging, which no environment variable silences ("All log
messages before absl::InitializeLog() ...", "Number of eligible GPUs ..."),
and TFLite's quantizer prints its settings to descriptor 1. So descriptors 1
and 2 each become a pipe that a thread copies to where it pointed, line by
line, leaving out such lines; Python's own sys.stdout and sys.stderr
(results, messages, progress bars) keep writing there directly. Fatal lines
("F...") and anything unrecognized pass through. Deprecation notices that
Keras, TensorFlow and the exporters raise about their own internals are
nothing a user can act on, so they are not shown either.
"""

import atexit
import logging
import os
import re
import sys
import threading
import warnings

NOISE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\]"  # absl: I0000 00:00:17.5 123 x.cc:67]
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] "  # TSL: 2026-01-01 10:00:00.1: I x.cc:31]
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|To enable the following instructions: .* rebuild TensorFlow"  # cpu_feature_guard's 2nd line
    rb"|libpng (?:error|warning): "  # a bad PNG; read_image reports it in one line
    rb"|\[ WARN:\d+@[\d.]+\] global "  # OpenCV's decoders
    rb"|fully_quantize: \d+, inference_type: )")  # TFLite's calibration, on descriptor 1

# Where the deprecation notices come from: the libraries, never the package.
LIBRARIES = r"(keras|tensorflow|tf2onnx|onnx|onnxruntime|jax|jaxlib|absl|google|h5py|ml_dtypes)(\.|$)"


def quiet_environment():
    """Log levels for the libraries that read them, set before they are imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARIES)


def filter_native_output():
    """Puts descriptors 1 and 2 behind the filtering pipes (see the module docstring)."""
    sys.stdout = _filter_descriptor(1, sys.stdout, line_buffering=sys.stdout.line_buffering)
    sys.stderr = _filter_descriptor(2, sys.stderr, line_buffering=True)


def _filter_descriptor(descriptor, stream, line_buffering):
    """Points `descriptor` at a pipe whose lines a thread copies to where it pointed;
    returns the Python stream to use instead of `stream`, writing there directly."""
    destination = os.dup(descriptor)
    stream.flush()
    direct = os.fdopen(os.dup(destination), "w", buffering=1 if line_buffering else -1,
                       encoding=stream.encoding, errors="backslashreplace")
    read_end, write_end = os.pipe()
    os.dup2(write_end, descriptor)
    os.close(write_end)
    thread = threading.Thread(target=_copy_lines, args=(read_end, destination), daemon=True)
    thread.start()

    def restore():
        os.dup2(destination, descriptor)  # closes the pipe's last write end: the thread ends
        thread.join(timeout=2)

    atexit.register(restore)
    return direct


def _copy_lines(read_end, destination):
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line + b"\n" for line in lines if not NOISE.match(line)]
            if kept:
                _write(destination, b"".join(kept))
        if pending and not NOISE.match(pending):
            _write(destination, pending)


def _write(destination, data):
    try:
        os.write(destination, data)
    except BrokenPipeError:  # the reader went away (`| head`): keep draining, show nothing
        pass
