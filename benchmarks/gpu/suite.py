r"""Every GPU question of issue 15 in one call: tests, train step, original, eval, warp.

  python benchmarks/gpu/suite.py --out $OUT              # on the GPU (run.sh calls this)
  python benchmarks/gpu/suite.py --dry-run --out /tmp/o  # tiny sizes on CPU, same code path

Parts, each a list of jobs run as subprocesses (own process group, killed at the part's limit,
so one hang cannot eat the call):
  a  pytest -m gpu tests/kernels/test_gpu.py (Pallas warp vs XLA forward/backward, bf16 train
     step, eval)
  b  benchmarks/train_step.py: DeepWV3Plus and DeepSRNX50V3PlusD_m1, crop 896, batch 2, bf16
  c  benchmarks/gpu/original_train_step.py: the ORIGINAL PyTorch code, same models/crop/batch,
     as shipped (fp16 autocast, NCHW) and modern (bf16 autocast, channels_last, torch.compile)
  d  benchmarks/eval.py: WRN38 multi-scale (0.5, 1, 2) + flip sliding eval of 1024x2048
  e  benchmarks/warp.py: Pallas vs XLA warp, GB/s against a device copy
Writes OUT/results.json (with each job's own JSON), OUT/summary.txt and OUT/log.txt (every
job's output); prints the summary.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, NamedTuple
import xml.etree.ElementTree as ElementTree

ROOT = pathlib.Path(__file__).resolve().parents[2]
PARTS = ("a", "b", "c", "d", "e")
# What a bf16 matmul reaches on an H100 SXM / H200 (KINDS.md: 769-798 TFLOP/s measured) next to
# the datasheet's dense 989 TFLOP/s that benchmarks/train_step.py divides by.
MATMUL_BF16_TFLOPS = 790.0
# Seconds per part on an H200: the sum stays under 8 minutes with the install (~20 s).
GPU_LIMITS_S = {"a": 70, "b": 190, "c": 115, "d": 60, "e": 25}
DRY_LIMITS_S = {"a": 300, "b": 200, "c": 300, "d": 200, "e": 120}
# Dry run on XLA:CPU: the cheap compiler pipeline (as tests/_testlib.FAST_COMPILE).
FAST_XLA_FLAGS = "--xla_backend_optimization_level=0"
if tuple(int(v) for v in importlib.metadata.version("jaxlib").split(".")[:2]) < (0, 11):
  FAST_XLA_FLAGS += " --xla_cpu_use_fusion_emitters=false"  # gone in jaxlib 0.11
# The tiny model of the dry run (tests/_testlib.tiny_demo_config's model and widths).
TINY_OVERRIDES = ["--config.model.overrides.width_multiplier=0.0625"]


class Job(NamedTuple):
  """One subprocess of a part; `result` is the JSON file it writes (None: none)."""
  name: str
  argv: list[str]
  result: pathlib.Path | None = None
  env: dict[str, str] | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", type=pathlib.Path,
                 default=pathlib.Path(os.environ.get("OUT") or "/tmp/jaxseg_gpu_out"))
  p.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU")
  p.add_argument("--parts", default=",".join(PARTS), help="comma list of a,b,c,d,e")
  p.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS",
                 help="override one part's time limit, e.g. --limit b=240")
  p.add_argument("--budget", type=float, default=0,
                 help="seconds for all parts together (0: 450 on GPU, none in a dry run)")
  p.add_argument("--original", type=pathlib.Path, default=ROOT / ".original",
                 help="export of NVIDIA/semantic-segmentation sdcnet (export_original.sh)")
  return p.parse_args(argv)


def part_limits(args: argparse.Namespace) -> dict[str, float]:
  limits = dict(DRY_LIMITS_S if args.dry_run else GPU_LIMITS_S)
  for item in args.limit:
    part, _, seconds = item.partition("=")
    if part not in PARTS or not seconds.replace(".", "", 1).isdigit():
      raise SystemExit(f"benchmarks/gpu/suite.py: --limit {item!r}: expected PART=SECONDS "
                       f"with PART in {PARTS}")
    limits[part] = float(seconds)
  return limits


def _train_step_jobs(dry: bool, tmp: pathlib.Path) -> list[Job]:
  py = sys.executable
  if dry:  # the test's tiny demo model (tests/kernels/test_gpu.py compiles the same program)
    runs = [("DeepR18V3PlusD_m1", "configs/demo.py", [*TINY_OVERRIDES,
                                                       "--config.data.crop_size=32"])]
    steps = ["--steps", "1", "--warmup", "1"]
  else:
    runs = [("DeepWV3Plus", "configs/cityscapes_wrn38.py", ["--config.data.crop_size=896"]),
            ("DeepSRNX50V3PlusD_m1", "configs/cityscapes_srnx50.py",
             ["--config.data.crop_size=896"])]
    steps = ["--steps", "10", "--warmup", "2"]
  jobs = []
  for model, config, extra in runs:
    out = tmp / f"b_{model}.json"
    jobs.append(Job(f"train_step {model}", [
        py, "benchmarks/train_step.py", "--config", config, *extra, *steps,
        "--config.precision=bf16", "--config.train.batch_size=2", "--config.train.bs_mult=0",
        "--config.mesh.shape={'data': 1}", "--num_classes", "19", "--out", str(out)], out))
  return jobs


def _original_jobs(dry: bool, tmp: pathlib.Path, original: pathlib.Path) -> list[Job]:
  # Dry run: ResNet-50 (CPU grouped-conv backward of SE-ResNeXt takes ~30 s a step here).
  models = ["DeepR50V3PlusD_m1"] if dry else ["DeepWV3Plus", "DeepSRNX50V3PlusD_m1"]
  size = ["--crop", "32", "--steps", "1", "--warmup", "1", "--compile-backend", "eager"] if dry \
      else ["--crop", "896", "--steps", "10", "--warmup", "3"]
  jobs = []
  for model in models:
    out = tmp / f"c_{model}.json"
    jobs.append(Job(f"original {model}", [
        sys.executable, "benchmarks/gpu/original_train_step.py", "--repo", str(original),
        "--model", model, "--batch", "2", *size, "--out", str(out)], out))
  return jobs


def build_jobs(part: str, dry: bool, tmp: pathlib.Path, limit: float,
               original: pathlib.Path) -> list[Job]:
  """The subprocesses of one part, run from the repository root."""
  py = sys.executable
  if part == "a":
    xml = tmp / "a_junit.xml"
    env = {"JAXSEG_GPU_TESTS_ON_CPU": "1"} if dry else {"JAXSEG_TEST_PLATFORMS": "auto"}
    return [Job("pytest -m gpu", [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                  "tests/kernels/test_gpu.py", f"--junitxml={xml}"], xml, env)]
  if part == "b":
    return _train_step_jobs(dry, tmp)
  if part == "c":
    return _original_jobs(dry, tmp, original)
  if part == "d":
    size = (["--models", "DeepR18V3PlusD_m1", "--width-multiplier", "0.0625", "--height", "32",
             "--width", "64", "--repeats", "1"] if dry else
            ["--models", "DeepWV3Plus", "--height", "1024", "--width", "2048", "--repeats", "2"])
    out = tmp / "d_eval.json"
    return [Job("eval ms_flip_sliding", [py, "benchmarks/eval.py", *size, "--precisions", "bf16",
                                         "--modes", "ms_flip_sliding", "--scales", "0.5,1.0,2.0",
                                         "--timeout", str(int(limit)), "--out", str(out)], out)]
  size = (["--height", "32", "--width", "64", "--interpret", "--iters", "2", "--warmup", "1"]
          if dry else ["--iters", "20", "--warmup", "3"])
  out = tmp / "e_warp.json"
  return [Job("warp", [py, "benchmarks/warp.py", "--impls", "xla,pallas", "--grad", *size,
                       "--out", str(out)], out)]


def base_env(dry: bool, tmp: pathlib.Path) -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONUNBUFFERED"] = "1"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
  env.setdefault("JAX_COMPILATION_CACHE_DIR", str(tmp / "jax_cache"))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  # The pytest job (tests/conftest.py) and the benchmark jobs share one cache; in a dry run
  # with the tests' 8 CPU devices, so that b and d reuse the programs a compiled.
  env["JAXSEG_TEST_COMPILE_CACHE"] = env["JAX_COMPILATION_CACHE_DIR"]
  if dry:
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_NUM_CPU_DEVICES"] = "8"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_XLA_FLAGS}".strip()
  return env


def run_job(job: Job, env: dict[str, str], timeout: float, log) -> dict[str, Any]:
  """Runs one job in its own process group; kills the whole group at `timeout`."""
  if job.result is not None and job.result.exists():
    job.result.unlink()
  log.write(f"\n===== {job.name}: {' '.join(job.argv)}\n")
  log.flush()
  t0 = time.monotonic()
  proc = subprocess.Popen(job.argv, cwd=ROOT, env={**env, **(job.env or {})}, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
  try:
    rc = proc.wait(timeout=max(timeout, 1.0))
    status = "ok" if rc == 0 else "failed"
  except subprocess.TimeoutExpired:
    for sig in (signal.SIGTERM, signal.SIGKILL):  # only the group started here
      try:
        os.killpg(proc.pid, sig)
      except ProcessLookupError:
        break
      try:
        proc.wait(timeout=10)
        break
      except subprocess.TimeoutExpired:
        continue
    rc, status = None, "timeout"
  row: dict[str, Any] = {"job": job.name, "status": status, "returncode": rc,
                         "seconds": round(time.monotonic() - t0, 1)}
  if job.result is not None and job.result.exists():
    text = job.result.read_text()
    row["result"] = junit_counts(text) if job.result.suffix == ".xml" else json.loads(text)
  log.write(f"===== {job.name}: {status} (rc {rc}) in {row['seconds']} s\n")
  log.flush()
  return row


def junit_counts(xml_text: str) -> dict[str, Any]:
  """Passed/failed/skipped counts and the failing tests of a pytest --junitxml report."""
  root = ElementTree.fromstring(xml_text)
  cases = list(root.iter("testcase"))
  failed, skipped = [], []
  for case in cases:
    name = f"{case.get('classname', '')}::{case.get('name', '')}"
    if case.find("failure") is not None or case.find("error") is not None:
      node = case.find("failure") if case.find("failure") is not None else case.find("error")
      failed.append({"test": name, "message": (node.get("message") or "")[:300]})
    elif case.find("skipped") is not None:
      skipped.append({"test": name, "message": (case.find("skipped").get("message") or "")[:200]})
  return {"tests": len(cases), "passed": len(cases) - len(failed) - len(skipped),
          "failed": failed, "skipped": skipped}


def skip_reason(part: str, dry: bool, original: pathlib.Path) -> str | None:
  """Why part c cannot run here (None: it can); the other parts always run."""
  if part != "c":
    return None
  try:
    import importlib.util  # pylint: disable=g-import-not-at-top
    if importlib.util.find_spec("torch") is None:
      return "torch is not installed"
  except ValueError:
    return "torch is not importable"
  if not (original / "network" / "deepv3.py").is_file():
    hint = " (run benchmarks/gpu/export_original.sh)" if not dry else ""
    return f"no original code at {original}{hint}"
  return None


def part_status(rows: list[dict[str, Any]]) -> str:
  statuses = {r["status"] for r in rows}
  if statuses == {"ok"}:
    if any(r.get("result", {}).get("failed") for r in rows if isinstance(r.get("result"), dict)):
      return "failed"
    return "ok"
  if "ok" in statuses:
    return "partial"
  return "timeout" if "timeout" in statuses else "failed"


def environment() -> dict[str, Any]:
  """Versions and the device as seen by a separate JAX process (the suite itself stays
  JAX-free so that its children own the accelerator)."""
  info: dict[str, Any] = {"python": platform.python_version(), "host": platform.node(),
                          "date": datetime.datetime.now().isoformat(timespec="seconds")}
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=20,
                         check=False)
    info["nvidia_smi"] = out.stdout.strip() or None
  except (OSError, subprocess.TimeoutExpired):
    info["nvidia_smi"] = None
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "ml-collections",
               "numpy", "torch", "torchvision"):
    try:
      info[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      info[name] = None
  return info


def _gib(v: float | None) -> str:
  return f"{v / 2**30:.1f} GiB" if v else "n/a"


def summarize_b(row: dict[str, Any]) -> str:
  r = row.get("result") or {}
  if not r:
    return f"{row['job']}: {row['status']}"
  mfu = ""
  if r.get("achieved_tflops_per_device"):
    tf = r["achieved_tflops_per_device"]
    spec = f"{100 * r['mfu']:.1f}% of {r['device_peak_bf16_tflops']:.0f}" if r.get("mfu") else "n/a"
    mfu = f", {tf:.0f} TFLOP/s: MFU {spec} / {100 * tf / MATMUL_BF16_TFLOPS:.1f}% of 790"
  return (f"{r['config']} {r['precision']} {r['global_batch']}x{r['crop']}^2: "
          f"{r['step_time_s'] * 1e3:.1f} ms/step, {r['img_per_s']:.2f} img/s{mfu}, peak "
          f"{_gib(r.get('peak_memory_bytes'))} (compile {r['compile_s']:.0f} s)")


def summarize_c(row: dict[str, Any]) -> list[str]:
  r = row.get("result") or {}
  if not r:
    return [f"{row['job']}: {row['status']}"]
  lines = []
  for m in r.get("modes", []):
    if "error" in m:
      lines.append(f"{r['model']} {m['mode']}: FAILED {m['error'][:80]}")
    else:
      lines.append(f"{r['model']} {m['mode']} ({m['desc']}): {m['step_time_s'] * 1e3:.1f} ms/step,"
                   f" {m['img_per_s']:.2f} img/s, peak {_gib(m.get('peak_memory_bytes'))}"
                   f" (first step {m['first_step_s']:.0f} s)")
  return lines


def summarize_d(row: dict[str, Any]) -> list[str]:
  lines = []
  for r in (row.get("result") or {}).get("results", []):
    if "error" in r:
      lines.append(f"{r['model']} {r['mode']}: FAILED {str(r['error'])[:80]}")
    else:
      lines.append(f"{r['model']} {r['precision']} scales {r['scales']} flip {r['height']}x"
                   f"{r['width']}: {r['seconds_per_image']:.3f} s/img ({r['crops']} crops in "
                   f"{r['model_calls']} calls, first {r['first_call_s']:.0f} s), peak "
                   f"{_gib(r['peak_bytes'])} {r['peak_kind']}")
  return lines or [f"{row['job']}: {row['status']}"]


def summarize_e(row: dict[str, Any]) -> list[str]:
  lines = []
  for r in (row.get("result") or {}).get("cases", []):
    if "gbps" in r:
      lines.append(f"{r['case']} {r['impl']}: {r['median_ms']:.3f} ms, {r['gbps']:.0f} GB/s "
                   f"({r['fraction_of_copy']:.0%} of copy {r['copy']['copy']['gbps']:.0f} GB/s)")
    else:
      lines.append(f"{r['case']} {r['impl']}: {r['median_ms']:.3f} ms")
  return lines or [f"{row['job']}: {row['status']}"]


def summary_lines(results: dict[str, Any]) -> list[str]:
  env = results["environment"]
  dry = "DRY RUN (CPU, tiny sizes) " if results["dry_run"] else ""
  head = (f"jaxseg GPU suite {env['date']} {dry}"
          f"on {env.get('nvidia_smi') or platform.machine()}; jax {env['jax']}, torch "
          f"{env['torch']}")
  lines = [head]
  names = {"a": "tests", "b": "train", "c": "original", "d": "eval", "e": "warp"}
  for part, p in results["parts"].items():
    lines.append(f"{part} {names[part]:8s} {p['status']:8s} {p['seconds']:6.1f} s"
                 + (f"  ({p['reason']})" if p.get("reason") else ""))
    details: list[str] = []
    for row in p.get("jobs", []):
      if part == "a":
        r = row.get("result") or {}
        details.append(f"{r.get('passed', 0)} passed, {len(r.get('failed', []))} failed, "
                       f"{len(r.get('skipped', []))} skipped" if r else f"{row['status']}")
        details += [f"FAILED {f['test']}: {f['message'][:90]}" for f in r.get("failed", [])]
      elif part == "b":
        details.append(summarize_b(row))
      elif part == "c":
        details += summarize_c(row)
      elif part == "d":
        details += summarize_d(row)
      else:
        details += summarize_e(row)
    lines += [f"    {d}" for d in details]
  lines.append(f"total {results['seconds']:.1f} s; JSON in {results['out']}/results.json, "
               f"logs in log.txt")
  return lines


def run(args: argparse.Namespace) -> dict[str, Any]:
  parts = [p for p in args.parts.split(",") if p]
  unknown = [p for p in parts if p not in PARTS]
  if unknown:
    raise SystemExit(f"benchmarks/gpu/suite.py: --parts {unknown}: expected some of {PARTS}")
  limits = part_limits(args)
  budget = args.budget or (0 if args.dry_run else 450)
  args.out.mkdir(parents=True, exist_ok=True)
  # Per-job JSON and the compile cache stay out of OUT (the device tool returns 8 files).
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="jaxseg_gpu_"))
  env = base_env(args.dry_run, tmp)
  t_start = time.monotonic()
  results: dict[str, Any] = {"dry_run": args.dry_run, "out": str(args.out),
                             "environment": environment(), "limits_s": limits, "parts": {}}
  with open(args.out / "log.txt", "w", encoding="utf-8") as log:
    for part in parts:
      t0 = time.monotonic()
      reason = skip_reason(part, args.dry_run, args.original.resolve())
      if reason:
        results["parts"][part] = {"status": "skipped", "reason": reason, "seconds": 0.0}
        continue
      part_deadline = t0 + limits[part]
      if budget:
        part_deadline = min(part_deadline, t_start + budget)
      rows = []
      for job in build_jobs(part, args.dry_run, tmp, limits[part], args.original.resolve()):
        left = part_deadline - time.monotonic()
        if left < 5:
          rows.append({"job": job.name, "status": "timeout", "returncode": None, "seconds": 0.0,
                       "note": "no time left in the part's limit or the call's budget"})
          continue
        rows.append(run_job(job, env, left, log))
      results["parts"][part] = {"status": part_status(rows), "jobs": rows,
                                "seconds": round(time.monotonic() - t0, 1)}
      print(f"part {part}: {results['parts'][part]['status']}", flush=True)
  results["seconds"] = round(time.monotonic() - t_start, 1)
  lines = summary_lines(results)
  results["summary"] = lines
  (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  (args.out / "summary.txt").write_text("\n".join(lines) + "\n")
  print("\n".join(lines), flush=True)
  return results


def main(argv: list[str] | None = None) -> int:
  results = run(parse_args(argv))
  bad = [p for p, r in results["parts"].items() if r["status"] not in ("ok", "skipped")]
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
