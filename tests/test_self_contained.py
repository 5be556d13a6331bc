"""The repository stands alone: library code reads no environment variable when imported and
cites nothing outside the repository; the manifests and facts it cites are inside it."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = ("nets", "attacker", "data", "engine")

PROBE = r"""
import os, sys, traceback
import tensorflow, tensorpack, numpy, cv2, zmq          # third-party imports may read what they like
library = tuple(os.path.join(sys.argv[1], d) + os.sep for d in ("nets", "attacker", "data", "engine"))

class Recorder(dict):
    def _note(self, key):
        for frame in traceback.extract_stack()[:-2]:
            if frame.filename.startswith(library):
                print("READ", key, frame.filename, frame.lineno)
    def __getitem__(self, key):
        self._note(key); return super().__getitem__(key)
    def get(self, key, default=None):
        self._note(key); return super().get(key, default)
    def __contains__(self, key):
        self._note(key); return super().__contains__(key)

os.environ = Recorder(os.environ)
import nets, attacker, data, engine.train, engine.predictor, flags, engine.classify_folder, engine.evaluate
print("IMPORTED")
"""


def test_library_reads_no_environment_variable_at_import():
    done = subprocess.run([sys.executable, "-c", PROBE, ROOT], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
    assert "IMPORTED" in done.stdout, done.stderr[-3000:]
    assert "READ" not in done.stdout, done.stdout


def library_files():
    for directory in LIBRARY + ("tools", "bench", "tests", "scripts"):
        for folder, _, names in os.walk(os.path.join(ROOT, directory)):
            for name in names:
                if name.endswith((".py", ".sh")):
                    yield os.path.join(folder, name)
    yield from (os.path.join(ROOT, name) for name in ("main.py", "config.py", "files.py", "README.md"))


def test_nothing_cites_a_file_outside_the_repository():
    outside = ("../shared", "SPEC Sec", "SPEC.md")
    this_file = os.path.abspath(__file__)
    offenders = [(path, word) for path in library_files() if os.path.abspath(path) != this_file
                 for word in outside if word in open(path).read()]
    assert offenders == []


def test_the_cited_facts_and_manifests_are_in_the_repository():
    facts = open(os.path.join(ROOT, "docs", "FACTS.md")).read()
    for section in range(1, 8):
        assert "\n## {}. ".format(section) in facts
    manifests = sorted(os.listdir(os.path.join(ROOT, "docs", "checkpoints")))
    assert [m for m in manifests if m.endswith(".json")] == sorted(
        "{}-{}.json".format(arch, depth) for arch in ("ResNet", "ResNetDenoise", "ResNeXtDenoiseAll")
        for depth in (50, 101, 152))
