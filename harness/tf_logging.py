"""TensorFlow imported without its start-up chatter (the commands' entry points only, never the library).

TensorFlow writes its CUDA probing and oneDNN notices from C++ before TF_CPP_MIN_LOG_LEVEL is read, so
stderr's file descriptor points at /dev/null while it is imported and probes its devices; an error
meanwhile still reaches the user as a Python exception. `HARNESS_TF_LOGS=1` keeps everything.
"""
from __future__ import annotations

import logging
import os
import sys


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with stderr silenced; Python-side TF logs at ERROR."""
    if "tensorflow" in sys.modules or os.environ.get("HARNESS_TF_LOGS") == "1":
        return
    # The C++ notices that come after start-up (oneDNN, CUDA).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe (cuInit) logs here, not at import
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tf.get_logger().setLevel(logging.ERROR)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
