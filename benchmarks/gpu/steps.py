"""The one GPU call: every GPU-only check of the project as named, time-boxed steps that fail softly into one report.

    python benchmarks/gpu/steps.py --out OUT            # the lent GPU machine (benchmarks/gpu/run.sh OUT): < 9 min
    python benchmarks/gpu/steps.py --out OUT --dry-run  # here / CI: CPU steps run small, GPU-only steps listed

A lent GPU machine gives a session one call of at most 10 minutes, so one failing or hanging check must not cost the
others: each step runs as its own process group under its own timeout (its budget), and whatever it ends with (ok,
a non-zero exit, a timeout, "not available") is recorded with its exit status, duration and the tail of its log, and
the next step runs. OUT receives steps.json and steps.md (rewritten after every step, so a call cut short keeps what
ran), steps.log (every step's full output), machine.json, results.json/results.md (the torch matrix) and
fuser_device.json: six files, within the eight a device call brings back. The C++ build goes to --build-dir (default
/tmp/maefuse-gpu-build), outside OUT, for the same reason.

The dry run runs the steps that a CPU can run cheaply (machine facts, the torch matrix's and the Fuser check's own dry
runs) and writes every GPU-only step into the report as "would run: <command>" with status dry-run, so the report
lists every step the real run runs, in order, with its exact command. Standard library only: the runner must work
where the project's dependencies are broken, since reporting that is its job.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEADLINE_S = 540.0  # the whole run: under 9 minutes, inside the device call's 10 (start-up and transfers are extra)
NOT_AVAILABLE = 3  # exit status of a step whose capability does not exist yet (aoti_cuda_check.py)
TAIL_LINES, TAIL_CHARS = 40, 4000  # how much of a step's log goes into the report (steps.log has all of it)
KILL_GRACE_S = 5.0  # after SIGTERM at the timeout, how long a step's processes get before SIGKILL
TENSORRT_NOTE = ("TensorRT itself cannot run here: it is not installed on the lent GPU machines (and its wheels do not "
                 "fit the 64 MiB a device call carries), so the TensorRT backend, its engine rows and the engine-based "
                 "C++ device tests (device_capi, device_streams) need a machine with TensorRT (docs/tensorrt.md).")
# compute-sanitizer's ctest entries run as steps of their own (one short timeout each), not twice inside ctest.
SANITIZER_TOOLS = {"memcheck": 20.0, "racecheck": 25.0, "synccheck": 15.0}


@dataclass
class Step:
    """One named check: ``argv`` runs from the repository root within ``budget_s`` seconds."""

    name: str
    argv: list[str]
    budget_s: float
    what: str = ""
    gpu_only: bool = False  # the dry run lists it ("would run") instead of running it
    dry_argv: list[str] | None = None  # what the dry run runs instead of argv (a CPU step's own dry run)
    may_be_unavailable: bool = False  # exit status NOT_AVAILABLE means "not available: <why>", not a failure


@dataclass
class Outcome:
    name: str
    status: str  # ok | failed | timed-out | not-available | dry-run | skipped | pending
    command: str  # what ran (or, for dry-run, what the real run would run)
    budget_s: float
    what: str = ""
    gpu_command: str | None = None  # dry run of a CPU step: the command the GPU run uses instead
    exit_status: int | None = None
    duration_s: float | None = None
    reason: str | None = None
    log_tail: str = ""


@dataclass
class Report:
    command: str
    dry_run: bool
    out: Path
    deadline_s: float = DEADLINE_S
    date: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    started: float = field(default_factory=time.monotonic)
    outcomes: list[Outcome] = field(default_factory=list)

    def machine(self) -> dict[str, Any]:
        """The machine's name and versions, from the machine step's JSON (absent when that step did not run)."""
        path = self.out / "machine.json"
        try:
            facts = json.loads(path.read_text())
        except (OSError, ValueError):
            return {"summary": "unknown (the machine step wrote no machine.json)"}
        tools = facts.get("tools", {})
        torch_facts = facts.get("torch", {})

        def line(tool: str) -> str:
            entry = tools.get(tool, {})
            return entry.get("line") or entry.get("error") or "?"

        gpu = (f"{torch_facts.get('gpu')} (compute capability {torch_facts.get('capability')}, "
               f"{torch_facts.get('memory_gib')} GiB)" if torch_facts.get("cuda_available") else "no CUDA GPU")
        summary = {
            "nvidia_smi": line("nvidia-smi"),
            "gpu": gpu,
            "torch": f"{torch_facts.get('version')} (CUDA {torch_facts.get('cuda')})",
            "nvcc": line("nvcc"),
            "cmake": line("cmake"),
            "compute_sanitizer": line("compute-sanitizer"),
            "python": facts.get("python"),
            "cpus": facts.get("cpus"),
        }
        return {"summary": summary, "facts": facts}

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.date, "command": self.command, "dry_run": self.dry_run, "machine": self.machine(),
            "tensorrt": TENSORRT_NOTE, "deadline_s": self.deadline_s,
            "budget_s": sum(o.budget_s for o in self.outcomes),
            "wall_s": round(time.monotonic() - self.started, 1),
            "steps": [asdict(o) for o in self.outcomes],
        }

    def save(self) -> None:
        data = self.to_json()
        (self.out / "steps.json").write_text(json.dumps(data, indent=2) + "\n")
        (self.out / "steps.md").write_text(markdown(data))


def markdown(data: dict[str, Any]) -> str:
    machine = data["machine"]["summary"]
    lines = ["# GPU checks: benchmarks/gpu/run.sh", "",
             f"- command: `{data['command']}`" + (" (DRY RUN on the CPU: GPU-only steps are listed with the command "
                                                 "the real run runs, not run)" if data["dry_run"] else ""),
             f"- date: {data['date']}"]
    if isinstance(machine, dict):
        lines += [f"- machine: nvidia-smi: {machine['nvidia_smi']}; GPU (torch): {machine['gpu']}; "
                  f"{machine['cpus']} CPUs",
                  f"- versions: torch {machine['torch']}; nvcc: {machine['nvcc']}; {machine['cmake']}; "
                  f"compute-sanitizer: {machine['compute_sanitizer']}; Python {machine['python']}"]
    else:
        lines.append(f"- machine: {machine}")
    lines += [f"- TensorRT: {data['tensorrt']}",
              f"- time: {len(data['steps'])} steps, budgets {data['budget_s']:.0f} s in all (each step's own "
              f"timeout; the run's deadline {data['deadline_s']:.0f} s), wall {data['wall_s']:.0f} s",
              "- outputs: steps.json, steps.md, steps.log (full logs), machine.json, results.json/results.md (torch "
              "matrix), fuser_device.json", "",
              "| # | step | status | exit | seconds | budget s |", "|---:|---|---|---:|---:|---:|"]
    for index, step in enumerate(data["steps"], 1):
        exit_text = "" if step["exit_status"] is None else str(step["exit_status"])
        seconds = "" if step["duration_s"] is None else f"{step['duration_s']:.1f}"
        lines.append(f"| {index} | {step['name']} | {step['status']} | {exit_text} | {seconds} | "
                     f"{step['budget_s']:.0f} |")
    for index, step in enumerate(data["steps"], 1):
        lines += ["", f"## {index}. {step['name']}: {step['status']}", ""]
        if step["what"]:
            lines.append(step["what"])
        if step["status"] == "dry-run":
            lines.append(f"- would run: `{step['command']}`")
        else:
            lines.append(f"- command: `{step['command']}`")
            if step["gpu_command"]:
                lines.append(f"- on the GPU: `{step['gpu_command']}`")
        if step["reason"]:
            lines.append(f"- {step['reason']}")
        if step["log_tail"] and step["status"] not in ("ok", "dry-run"):
            lines += ["", "```", step["log_tail"].rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """The step's whole process group (cmake -> ninja -> compilers, ctest -> tests): its children must not outlive
    its timeout and eat the next step's time."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-TAIL_LINES:])[-TAIL_CHARS:]


def run_step(step: Step, argv: list[str], timeout_s: float, log_path: Path, env: dict[str, str]) -> Outcome:
    """Run one step to its end or its timeout; never raises for the step's own failures."""
    outcome = Outcome(step.name, "failed", shlex.join(argv), step.budget_s, step.what)
    with log_path.open("ab") as log:
        log.write(f"\n===== {step.name}: {shlex.join(argv)} (budget {step.budget_s:.0f} s)\n".encode())
        log.flush()
        start_offset = log.tell()
        began = time.monotonic()
        try:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:  # a missing tool (compute-sanitizer, cmake) is a result like any other
            log.write(f"cannot start: {error}\n".encode())
            outcome.exit_status, outcome.reason = 127, f"cannot start: {error}"
        else:
            try:
                outcome.exit_status = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                outcome.exit_status = proc.returncode
                outcome.status = "timed-out"
                limit = "its budget" if timeout_s >= step.budget_s else "what the run's deadline left it"
                outcome.reason = f"timed out after {timeout_s:.0f} s ({limit}); its processes were killed"
                log.write(f"\n[steps.py: timed out after {timeout_s:.0f} s]\n".encode())
            else:
                # Whatever the step left running in its group (a test server, a stray compiler) ends with it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        outcome.duration_s = round(time.monotonic() - began, 2)
    with log_path.open("rb") as log:
        log.seek(start_offset)
        text = log.read().decode(errors="replace")
    outcome.log_tail = _tail(text)
    if outcome.status != "timed-out" and outcome.exit_status is not None:
        if outcome.exit_status == 0:
            outcome.status = "ok"
        elif outcome.exit_status == NOT_AVAILABLE and step.may_be_unavailable:
            outcome.status = "not-available"
            said = [line for line in text.splitlines() if line.startswith("not available:")]
            outcome.reason = said[-1] if said else "not available (the step gave no reason)"
        else:
            outcome.status = "failed"
            outcome.reason = outcome.reason or f"exit status {outcome.exit_status}"
    return outcome


def step_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # a step's log is written as it runs, so a killed step still shows its last words
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    # The CUDA tools (nvcc, compute-sanitizer) where the toolkit lives; after PATH, so the machine's own choice wins.
    extra = [d for d in ("/usr/local/cuda/bin", "/usr/local/cuda/compute-sanitizer") if Path(d).is_dir()]
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), *extra])
    return env


def run_steps(steps: Sequence[Step], out: Path, *, dry_run: bool, command: str,
              deadline_s: float = DEADLINE_S) -> Report:
    """Run (or, in a dry run, list) ``steps`` in order into ``out``; a step's failure never stops the next."""
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "steps.log"
    log_path.write_bytes(b"")
    report = Report(command=command, dry_run=dry_run, out=out, deadline_s=deadline_s)
    report.outcomes = [Outcome(s.name, "pending", shlex.join(s.argv), s.budget_s, s.what) for s in steps]
    report.save()  # the whole plan is on disk before the first step, in case the call is cut short
    env = step_env()
    for index, step in enumerate(steps):
        if dry_run and step.gpu_only:
            outcome = Outcome(step.name, "dry-run", shlex.join(step.argv), step.budget_s, step.what,
                              reason="GPU-only: listed by the dry run, not run")
        else:
            argv = step.dry_argv if dry_run and step.dry_argv is not None else step.argv
            remaining = deadline_s - (time.monotonic() - report.started)
            if remaining < 1.0:
                outcome = Outcome(step.name, "skipped", shlex.join(argv), step.budget_s, step.what,
                                  reason=f"the run's {deadline_s:.0f} s deadline was reached before this step")
            else:
                outcome = run_step(step, argv, min(step.budget_s, remaining), log_path, env)
            if dry_run and step.dry_argv is not None:
                outcome.gpu_command = shlex.join(step.argv)
        report.outcomes[index] = outcome
        report.save()
        print(f"[{index + 1}/{len(steps)}] {step.name}: {outcome.status}"
              + (f" (exit {outcome.exit_status}, {outcome.duration_s:.1f} s of {step.budget_s:.0f} s)"
                 if outcome.duration_s is not None else "")
              + (f": {outcome.reason}" if outcome.reason and outcome.status != "dry-run" else ""), flush=True)
        if outcome.status in ("failed", "timed-out"):
            print(_tail(outcome.log_tail)[-1500:], flush=True)
    return report


def plan(out: Path, build_dir: Path, python: str) -> list[Step]:
    """Every step of the GPU call, in order, with its budget (seconds; they sum to under DEADLINE_S)."""
    gpu = "benchmarks/gpu"
    device_test = str(build_dir / "engines" / "tests" / "test_device")
    steps = [
        Step("machine", [python, f"{gpu}/machine_facts.py", "--json", str(out / "machine.json"), "--require-gpu"],
             20.0, "nvidia-smi, torch.cuda facts, nvcc, cmake and compute-sanitizer versions (machine.json)",
             dry_argv=[python, f"{gpu}/machine_facts.py", "--json", str(out / "machine.json")]),
        Step("torch-matrix", [python, f"{gpu}/gpu_bench.py", "--out", str(out), "--budget-s", "120"], 220.0,
             "maefuse-l640 fp16/bf16 x eager / CUDA graphs / torch.compile at batch 1 and 8 vs float32 "
             "(results.json, results.md); compile rows start only in the first 120 s",
             dry_argv=[python, f"{gpu}/gpu_bench.py", "--out", str(out), "--dry-run"]),
        Step("fuser-cuda-tensors", [python, f"{gpu}/fuser_device_check.py", "--json", str(out / "fuser_device.json")],
             30.0, "CUDA tensor pairs and a CUDA DLPack object through Fuser (torch, cuda): device path, CUDA "
             "result, equal to the numpy pair within the stated grey levels (fuser_device.json)",
             dry_argv=[python, f"{gpu}/fuser_device_check.py", "--json", str(out / "fuser_device.json"),
                       "--dry-run"]),
        Step("cpp-build", ["bash", f"{gpu}/cpp_build.sh", str(build_dir), python], 140.0,
             "cmake + build of the C++ tree for sm_90, device tests on, no GStreamer, -j16 (third-party fallbacks "
             "where the machine lacks nlohmann-json/stb/pkg-config)", gpu_only=True),
        Step("ctest", ["ctest", "--test-dir", str(build_dir), "--output-on-failure", "-j", "4", "--timeout", "30",
                       "-E", "^device_kernels_(memcheck|racecheck|synccheck)$"], 40.0,
             "every ctest test of that build, device_kernels included (its compute-sanitizer variants are the next "
             "steps)", gpu_only=True),
    ]
    for tool, budget in SANITIZER_TOOLS.items():
        steps.append(Step(f"compute-sanitizer-{tool}",
                          ["compute-sanitizer", "--tool", tool, "--error-exitcode", "1", device_test, "kernels"],
                          budget, f"test_device kernels under compute-sanitizer {tool}", gpu_only=True))
    steps.append(Step("aoti-cuda", [python, f"{gpu}/aoti_cuda_check.py", "--build-dir", str(build_dir), "--work",
                                    "/tmp/maefuse-gpu-aoti"], 20.0,
                      "an AOTInductor package compiled for CUDA, run by the C++ runtime vs the Python Fuser "
                      "(not available until the exporter and the C++ backend can target CUDA)",
                      gpu_only=True, may_be_unavailable=True))
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="report folder (the device call's $OUT)")
    parser.add_argument("--dry-run", action="store_true", help="CPU steps small, GPU-only steps listed, not run")
    parser.add_argument("--build-dir", type=Path, default=Path("/tmp/maefuse-gpu-build"),
                        help="C++ build folder, outside OUT (only 8 files come back from a device call)")
    parser.add_argument("--deadline-s", type=float, default=DEADLINE_S, help="the whole run's time [%(default)s]")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    steps = plan(out, args.build_dir.resolve(), sys.executable)
    command = "benchmarks/gpu/run.sh " + shlex.quote(str(args.out)) + (" --dry-run" if args.dry_run else "")
    report = run_steps(steps, out, dry_run=args.dry_run, command=command, deadline_s=args.deadline_s)
    failed = [o.name for o in report.outcomes if o.status in ("failed", "timed-out")]
    print(f"wrote {out / 'steps.json'} and {out / 'steps.md'}"
          + (f"; failed or timed out: {', '.join(failed)}" if failed else "; no step failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
