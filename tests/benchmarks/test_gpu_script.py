"""benchmarks/gpu/run.sh before a GPU appears: its CPU dry run (tiny sizes, the same code path)
and the suite's pieces (time limits that kill a whole job, pytest report parsing, the offline
install's requirement check)."""
import json
import os
import pathlib
import subprocess
import sys
import time

from _testlib import ROOT
from _testlib import load_module
from _testlib import subprocess_env
import pytest


def _suite():
  return load_module("benchmarks/gpu/suite.py")


def test_a_job_past_its_limit_is_killed_with_its_children(tmp_path):
  suite = _suite()
  pidfile = tmp_path / "child.pid"
  # The job starts a grandchild (as benchmarks/eval.py does) that must die with it.
  script = f"sleep 60 & echo $! > {pidfile}; wait"
  t0 = time.monotonic()
  with open(tmp_path / "log.txt", "w", encoding="utf-8") as log:
    row = suite.run_job(suite.Job("sleeper", ["bash", "-c", script]), dict(os.environ), 1.5, log)
  assert row["status"] == "timeout" and time.monotonic() - t0 < 15
  child = int(pidfile.read_text())
  time.sleep(0.2)
  assert not pathlib.Path(f"/proc/{child}").exists() or "Z" in pathlib.Path(
      f"/proc/{child}/stat").read_text().split()[2], "the job's child outlived its limit"


def test_junit_counts_and_part_status():
  suite = _suite()
  xml = ("<testsuites><testsuite><testcase classname='t' name='ok'/>"
         "<testcase classname='t' name='bad'><failure message='boom'/></testcase>"
         "<testcase classname='t' name='later'><skipped message='no gpu'/></testcase>"
         "</testsuite></testsuites>")
  counts = suite.junit_counts(xml)
  assert counts["passed"] == 1 and counts["tests"] == 3
  assert counts["failed"] == [{"test": "t::bad", "message": "boom"}]
  assert suite.part_status([{"status": "ok", "result": counts}]) == "failed"
  assert suite.part_status([{"status": "ok"}, {"status": "timeout"}]) == "partial"
  with pytest.raises(SystemExit, match="PART=SECONDS"):
    suite.part_limits(suite.parse_args(["--limit", "z=3"]))


def test_missing_requirements():
  missing = load_module("benchmarks/gpu/missing_requirements.py").missing
  assert missing(["numpy>=1", "surely-not-installed-pkg>=1"]) == ["surely-not-installed-pkg>=1"]
  assert missing(["numpy<1"]) == ["numpy<1"]  # installed, but out of range


@pytest.mark.slow
def test_dry_run(tmp_path):
  """The whole call on CPU: every part ok (c skipped when torch or .original is absent)."""
  out = tmp_path / "out"
  env = {**os.environ, **subprocess_env(), "OUT": str(out), "PYTHON": sys.executable}
  env["JAX_COMPILATION_CACHE_DIR"] = subprocess_env()["JAX_COMPILATION_CACHE_DIR"]
  proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--dry-run"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                        check=False)
  log = (out / "log.txt").read_text()[-4000:] if (out / "log.txt").exists() else ""
  assert proc.returncode == 0, f"{proc.stdout[-3000:]}{proc.stderr[-2000:]}{log}"
  results = json.loads((out / "results.json").read_text())
  parts = results["parts"]
  assert sorted(parts) == list("abcde") and results["dry_run"]
  for part in "abde":
    assert parts[part]["status"] == "ok", (part, parts[part], log)
  tests = parts["a"]["jobs"][0]["result"]
  assert tests["passed"] >= 7 and not tests["failed"], tests  # bodies ran, on CPU
  assert parts["b"]["jobs"][0]["result"]["precision"] == "bf16"
  assert parts["d"]["jobs"][0]["result"]["results"][0]["scales"] == [0.5, 1.0, 2.0]
  impls = {c["impl"] for c in parts["e"]["jobs"][0]["result"]["cases"]}
  assert impls == {"xla", "pallas"}
  if parts["c"]["status"] == "skipped":
    assert parts["c"]["reason"] in (out / "summary.txt").read_text()
  else:
    assert parts["c"]["status"] == "ok", parts["c"]
  assert "DRY RUN" in (out / "summary.txt").read_text()
