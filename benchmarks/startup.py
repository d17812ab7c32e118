r"""Cold vs warm start of the CLI: seconds from `python -m jaxseg.main` to the first train step
(and to the end of a one-batch `--mode eval`), with an empty and then a filled persistent
compilation cache.

  python benchmarks/startup.py --out benchmarks/results/startup_cpu.json

Each case runs twice in fresh processes sharing one new cache folder (JAXSEG_COMPILE_CACHE):
the first run compiles and fills it (cold), the second loads the programs from it (warm).
Training runs one step with `log_every=1`: `train_step_ready_s` is the time to its "train step
ready" log line (state, first batch and program in hand: the start-up proper), and
`train_first_step_s` to its "step 1/" line, which the trainer prints once the first step's
metrics are on the host. Eval restores the checkpoint that the
training run wrote and evaluates one batch; its clock stops when the process exits.
Also reported: the seconds to import jaxseg's training modules (the floor of any start).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.py")
# (name, overrides): the demo, and the 2019 ResNet-50 DeepLabV3+ at a CPU-sized crop.
CASES = {
    "demo": [],
    "DeepR50V3PlusD_m1": ["--config.model.name=DeepR50V3PlusD_m1",
                          "--config.model.overrides.width_multiplier=1.0",
                          "--config.data.crop_size=128", "--config.train.batch_size=2",
                          "--config.eval.batch_size=2"],
}
READY = "train step ready in"  # logged once the train step is compiled or loaded
COMMON = ["--config.train.num_steps=1", "--config.train.log_every=1",
          "--config.train.eval_every=0", "--config.train.checkpoint_every=1",
          "--config.checkpoint.async_save=False", "--config.progress_bar=False",
          "--config.eval.max_batches=1", "--config.eval.write_predictions=False",
          "--config.eval.mode=whole", "--verbosity=0"]


def _run(argv: list[str], env: dict[str, str], markers: tuple[str, ...] = ()
         ) -> dict[str, float]:
  """Seconds to the first line holding each of `markers` in the output, and to exit."""
  start = time.perf_counter()
  proc = subprocess.Popen([sys.executable, "-m", "jaxseg.main", *argv], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  seen, tail = {}, []
  for line in proc.stdout:
    tail = (tail + [line])[-40:]
    for marker in markers:
      if marker not in seen and marker in line:
        seen[marker] = round(time.perf_counter() - start, 2)
  if proc.wait() != 0:
    raise RuntimeError(f"{argv} failed:\n{''.join(tail)}")
  missing = [m for m in markers if m not in seen]
  if missing:
    raise RuntimeError(f"{argv}: no line with {missing} in the output")
  return {**seen, "total_s": round(time.perf_counter() - start, 2)}


def _import_seconds(env: dict[str, str]) -> float:
  code = ("import time; t = time.perf_counter(); import jaxseg.train.loop, jaxseg.inference."
          "commands; print(time.perf_counter() - t)")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=True).stdout
  return round(float(out.strip().splitlines()[-1]), 2)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default=",".join(CASES), help="comma list of " + ", ".join(CASES))
  parser.add_argument("--out", default=None, help="JSON output path")
  args = parser.parse_args()
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                    os.environ.get("PYTHONPATH")]))}
  # A warm start includes Python's bytecode caches: without them every start compiles jaxseg's
  # sources again (0.2-0.3 s on this CPU), so a shell that switches them off is overridden.
  env.pop("PYTHONDONTWRITEBYTECODE", None)
  results = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
             "date": time.strftime("%Y-%m-%d"), "import_s": _import_seconds(env), "cases": {}}
  for name in args.cases.split(","):
    cache, work = tempfile.mkdtemp(prefix="jaxseg_cc_"), tempfile.mkdtemp(prefix="jaxseg_run_")
    run_env = {**env, "JAXSEG_COMPILE_CACHE": cache}
    case = {}
    try:
      for kind in ("cold", "warm"):
        shutil.rmtree(work, ignore_errors=True)
        train = _run(["--config", DEMO, "--workdir", work, *COMMON, *CASES[name]], run_env,
                     (READY, "step 1/"))
        evaluate = _run(["--config", DEMO, "--workdir", work, "--mode", "eval", *COMMON,
                         *CASES[name]], run_env)
        case[kind] = {"train_step_ready_s": train[READY], "train_first_step_s": train["step 1/"],
                      "train_total_s": train["total_s"], "eval_total_s": evaluate["total_s"]}
        print(name, kind, case[kind], flush=True)
    finally:
      shutil.rmtree(cache, ignore_errors=True)
      shutil.rmtree(work, ignore_errors=True)
    results["cases"][name] = case
  text = json.dumps(results, indent=1)
  print(text)
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
  main()
