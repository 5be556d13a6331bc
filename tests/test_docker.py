"""The CPU container image: scripts/docker.sh builds it from the Dockerfile (the same file as the
GPU image, other build arguments) and smoke-tests it against this checkout: the same evaluation
counts as on the host, 2 Horovod ranks in one container, clear errors for a missing or wrongly
mounted data folder. Skipped where no Docker engine answers (this project's CI has none)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A first build installs TensorFlow and compiles Horovod (about 20 minutes on 2 cores); the
# smoke tests take a few more. Anything much longer is a hang.
TIMEOUT = 3 * 3600


def engine_answers():
    """'' when `docker info` answers within a few seconds, else why not."""
    if shutil.which("docker") is None:
        return "no 'docker' command"
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "'docker info' did not answer within 10 s"
    if done.returncode != 0:
        return "'docker info' failed: " + (done.stderr.strip().splitlines() or ["exit {}".format(done.returncode)])[-1]
    return ""


@pytest.mark.full
@pytest.mark.timeout(TIMEOUT + 600)
def test_cpu_image_builds_and_runs_like_the_host(tmp_path):
    reason = engine_answers()
    if reason:
        pytest.skip("no Docker engine: {} (start one to build and smoke-test the image)".format(reason))
    try:
        done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "docker.sh")], cwd=ROOT,
                              env=dict(os.environ, WORK=str(tmp_path / "docker")), capture_output=True,
                              text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail("scripts/docker.sh did not finish within {} s: {}".format(TIMEOUT, str(timeout.stdout)[-3000:]))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    for line in ("same counts", "horovodrun exited 0", "missing-data: exit", "bad-mount: exit",
                 "all smoke tests passed"):
        assert line in output, output[-5000:]
