"""Every command starts without TensorFlow's start-up lines (harness.tf_logging): a user sees the
harness's own output only. Each command below imports TensorFlow and then stops at a user mistake."""
import os
import subprocess
import sys

import pytest

# TensorFlow's C++ start-up chatter on a machine without a GPU (and its oneDNN notice).
CHATTER = ("absl::InitializeLog", "oneDNN", "cuda drivers", "cuInit", "cudart_stub", "cuda_platform")

COMMANDS = {
    "bench": (["-m", "harness.bench", "--methods", "nonsense"], "unknown model / method: nonsense"),
    "reproduce": (["-m", "harness.reproduce", "nonsense"], "unknown experiment 'nonsense'"),
    "zoo.train": (["-m", "harness.zoo.train", "nonsense"], "'nonsense' is not a step-budget model"),
    "harness": (["-c", "import sys; from harness.cli import main; sys.argv = ['harness', 'layers', "
                 "'model.source=builtin:nonsense']; main()"], "unknown built-in model 'nonsense'"),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_no_tensorflow_start_up_lines(name):
    args, error = COMMANDS[name]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "HARNESS_TF_LOGS")}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0 and error in done.stderr, done.stderr
    assert not [line for line in done.stderr.splitlines() if any(c in line for c in CHATTER)], done.stderr


def test_importing_harness_changes_nothing_process_wide():
    """The silencing belongs to the commands: importing the package leaves TensorFlow unimported and
    stderr where it was."""
    code = ("import os, sys; before = os.fstat(2).st_ino; import harness, harness.tf_logging, harness.zoo, "
            "harness.reproduce, harness.bench, harness.progress; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; assert os.fstat(2).st_ino == before")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_the_training_estimate_is_flushed_before_the_trainings_start(monkeypatch):
    # Catches the estimate line printed without a flush: with stdout a file or a pipe (CI, `| tee`),
    # it reached the log after the training workers' lines, minutes late.
    from harness import reproduce
    from harness.zoo import prepare

    class Stdout:
        def __init__(self):
            self.text, self.flushed = "", ""

        def write(self, text):
            self.text += text

        def flush(self):
            self.flushed = self.text

    stdout = Stdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(prepare, "train_all", lambda names, log, quick_names: log("training 2 models, about 1 min"))
    reproduce.train_models([], {}, [], quick=True)
    assert stdout.flushed == "training 2 models, about 1 min\n"
