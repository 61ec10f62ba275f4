"""Faults against a run of a few hundred samples: kill -9, a sandbox-engine outage, a worker killed, one paused.

The same replayed HumanEval samples (each problem's canonical solution and a mutant of it) run twice through
`evalkit run`: once undisturbed, and once disturbed:
1. evalkit is killed with SIGKILL once a third of the samples are logged, then resumed with `--resume`;
2. during the resumed run, the engine vanishes for 5 s: a proxy in front of the Docker socket cuts every
   connection (the shared dockerd itself is never touched);
3. then one of the run's worker containers is killed (`docker kill`) and another one paused (`docker pause`).
It prints the samples, the verdicts equal to the undisturbed run's (n/n), duplicate sample lines and error
verdicts, with the wall time of each run and the machine's load.

    python benchmarks/bench_faults.py [--problems 150] [--workers 2] [--outage 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from evalkit.data import DataConfig
from evalkit.sandbox.docker_pool import LABEL
from evalkit.sandbox.socket_proxy import DockerSocketProxy
from evalkit.tasks import get_task

MUTATIONS = ((" + 1", " + 2"), (" < ", " <= "), (" > ", " >= "), (" == ", " != "), ("True", "False"), (" - ", " + "))


def mutant(body: str) -> str:
    for old, new in MUTATIONS:
        if old in body:
            return body.replace(old, new, 1)
    return "    return None\n"


def write_replay(path: Path, problems: int) -> int:
    docs = get_task("humaneval", DataConfig.from_options()).docs()[:problems]
    lines = [json.dumps({"task_id": d["task_id"], "completion": c})
             for d in docs for c in (d["canonical_solution"], mutant(d["canonical_solution"]))]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def run_command(replay: Path, problems: int, workers: int, out: Path, resume: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "evalkit.cli", "run", "--model", f"replay:{replay}", "--tasks", "humaneval",
           "--limit", str(problems), "--sandbox-workers", str(workers), "--output-path", str(out), "--no-progress"]
    return cmd + (["--resume", str(resume)] if resume else [])


def logged(out: Path) -> int:
    return sum(sum(1 for _ in p.open()) for p in out.glob("*/samples.jsonl"))


def read_samples(run_dir: Path) -> tuple[dict, int]:
    verdicts, lines = {}, 0
    for line in (run_dir / "samples.jsonl").open():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by the kill: not finished work
        lines += 1
        verdicts[(row["task_id"], row["sample_index"])] = row["verdict"]
    return verdicts, lines


def workers_of(pid: int) -> list[str]:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label={LABEL}.owner-pid={pid}"],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "DOCKER_HOST": ""})
    return out.stdout.split()


def wait_for(out: Path, count: int, proc: subprocess.Popen, limit: float = 1800) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if logged(out) >= count:
            return True
        time.sleep(0.1)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=150, help="HumanEval problems (two samples each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds the engine is unreachable")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="evalkit-bench-faults-"))
    replay = tmp / "replay.jsonl"
    total = write_replay(replay, args.problems)
    print(f"{total} samples ({args.problems} HumanEval problems, canonical + mutant), {args.workers} workers; "
          f"load before: {os.getloadavg()[0]:.1f}", flush=True)

    start = time.monotonic()
    subprocess.run(run_command(replay, args.problems, args.workers, tmp / "plain"), check=True,
                   capture_output=True, timeout=3600)
    plain_s = time.monotonic() - start
    (plain_dir,) = (tmp / "plain").iterdir()
    expected, _ = read_samples(plain_dir)

    events: list[str] = []
    with DockerSocketProxy(tmp / "docker.sock") as proxy:
        env = {**os.environ, "DOCKER_HOST": proxy.docker_host}
        out = tmp / "disturbed"
        start = time.monotonic()
        first = subprocess.Popen(run_command(replay, args.problems, args.workers, out), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if wait_for(out, total // 3, first):
            os.kill(first.pid, signal.SIGKILL)
            events.append(f"kill -9 after {logged(out)} samples")
        first.wait()
        (run_dir,) = out.iterdir()
        resumed = subprocess.Popen(run_command(replay, args.problems, args.workers, out, resume=run_dir), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if wait_for(out, total // 2, resumed):
            events.append(f"engine unreachable for {args.outage:g} s at {logged(out)} samples")
            threading.Thread(target=proxy.outage, args=(args.outage,), daemon=True).start()
        if wait_for(out, (total * 7) // 10, resumed) and (ids := workers_of(resumed.pid)):
            subprocess.run(["docker", "kill", ids[0]], capture_output=True, timeout=60)
            events.append(f"docker kill of a worker at {logged(out)} samples")
        if wait_for(out, (total * 8) // 10, resumed) and (ids := workers_of(resumed.pid)):
            subprocess.run(["docker", "pause", ids[-1]], capture_output=True, timeout=60)
            events.append(f"docker pause of a worker at {logged(out)} samples")
        _, stderr = resumed.communicate(timeout=3600)
        disturbed_s = time.monotonic() - start
    got, lines = read_samples(run_dir)
    equal = sum(got.get(key) == verdict for key, verdict in expected.items())
    errors = sum(v == "error" for v in got.values())
    print("faults: " + "; ".join(events))
    print(f"undisturbed run {plain_s:6.1f} s   disturbed run (kill, resume, faults) {disturbed_s:6.1f} s   "
          f"ratio {disturbed_s / plain_s:.2f}")
    print(f"samples: {len(got)}/{total}   verdicts equal to the undisturbed run: {equal}/{len(expected)}   "
          f"duplicates: {lines - len(got)}   errors: {errors}   resumed run's exit status: {resumed.returncode}")
    print(f"load after: {os.getloadavg()[0]:.1f}")
    if resumed.returncode != 0:
        print(stderr[-2000:])


if __name__ == "__main__":
    main()
