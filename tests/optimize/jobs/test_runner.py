import os
import subprocess
import sys

import pytest

from optimize.jobs._artifacts import store_artifact
from optimize.jobs._runner import TIMED_OUT_EXIT
from optimize.jobs.executor import TIMED_OUT_EXIT as EXECUTOR_TIMED_OUT_EXIT
from optiserve.errors import UserError
from optiserve.hashing import sha256_of


def _runner(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "optimize.jobs._runner", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_runner_passes_the_exit_code_through(tmp_path):
    proc = _runner("--max-runtime-s", "30", "--cwd", str(tmp_path / "run"), "--", sys.executable, "-c",
                   "import os; print(os.getcwd()); raise SystemExit(3)")
    assert proc.returncode == 3
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "run")


def test_runner_stops_the_whole_group_at_the_limit(tmp_path):
    marker = tmp_path / "grandchild.pid"
    # the command starts a grandchild; both must be gone after the limit
    script = f"import subprocess,time; p=subprocess.Popen(['sleep','60']); open('{marker}','w').write(str(p.pid)); " \
             "time.sleep(60)"
    proc = _runner("--max-runtime-s", "1", "--", sys.executable, "-c", script)
    assert proc.returncode == TIMED_OUT_EXIT == EXECUTOR_TIMED_OUT_EXIT
    assert "exceeded its max run time of 1 s" in proc.stdout
    grandchild = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # a zombie is reaped by init shortly after
            os.kill(grandchild, 0)
            subprocess.run(["sleep", "0.1"])


def test_artifacts_are_content_addressed_and_read_only(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    stored, sha = store_artifact(model, tmp_path / "store")
    assert sha == sha256_of(model) and stored == tmp_path / "store" / sha / "model.pt"
    assert stored.read_bytes() == b"weights" and stored.stat().st_mode & 0o222 == 0
    assert store_artifact(model, tmp_path / "store") == (stored, sha)  # idempotent
    folder = tmp_path / "hf"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "w.bin").write_bytes(b"1")
    stored_dir, dir_sha = store_artifact(folder, tmp_path / "store")
    assert (stored_dir / "sub" / "w.bin").read_bytes() == b"1" and dir_sha == sha256_of(stored_dir)
    with pytest.raises(UserError, match="does not exist"):
        store_artifact(tmp_path / "absent.pt", tmp_path / "store")
