"""Benchmark ``bastion scan`` against modelscan, picklescan and fickling on the same files.

Run it with ``make bench``, or ``.venv/bin/python benchmarks/scanning.py [--runs N] [--quick]``.

In one run it:

* builds (once, then reuses) under ``.bench/scan-inputs/`` a 500 MiB float64 numpy array
  pickled with protocol 4, a ``torch.save`` of a 500 MiB tensor (zip) and the same in the
  legacy format, a ``torch.save`` of a dict of 20,000 small tensors, a protocol-4 pickle of
  ``list(range(10_000_000))`` (its opcodes counted once with ``pickletools.genops``), and the
  test corpus of benign and malicious files (``tests/scanning_corpus``); ``--quick`` makes
  32 MiB, 2,000 tensors and 1,000,000 integers instead, a smoke check;
* installs the anchors, ``modelscan``, ``picklescan`` and ``fickling`` (plus
  ``typing_extensions``, which fickling 0.1.12 imports without declaring, and ``numpy<2``,
  which modelscan 0.8.8 needs to read ``.npy`` files) in their own virtual environment,
  ``.bench/venv-scanners``;
* runs every tool through its command line on each file, in rounds that interleave the
  tools (a warm page cache: each input is read once before its case), and prints the median
  wall time, CPU time, peak RSS and the tool's verdict; each corpus file is scanned once by
  each tool, on its own;
* checks the issue's targets on Bastion's figures.

Verdicts come from exit codes (see ``VERDICTS``): ``detected`` (the tool says unsafe),
``clean``, ``error`` (the tool could not scan it, or crashed), ``skipped`` (modelscan
scanned nothing: no file it supports, or the only one failed to parse) and ``timeout``
(killed after ``--timeout`` seconds). A Python traceback with exit status 1 is an
``error``, not a detection: an uncaught exception exits with 1, the same status as "unsafe".

Standard library only (the inputs are written by the interpreter running this script, which
needs numpy and torch); Linux only (peak RSS from ``wait4`` and ``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from _bench import (
    GB,
    MIB,
    REPO,
    BenchError,
    add_common_options,
    human_bytes,
    log,
    machine,
    parse_common,
    warm,
)

#: fickling 0.1.12 imports typing_extensions without declaring it; modelscan 0.8.8 reads
#: .npy files with numpy.lib.format._check_version, which numpy 2 no longer has.
ANCHOR_PACKAGES = (
    "modelscan==0.8.8",
    "picklescan==1.0.5",
    "fickling==0.1.12",
    "typing_extensions",
    "numpy<2",
)
ANCHORS = ("modelscan", "picklescan", "fickling")
CORPUS_TIMEOUT = 60.0  # seconds per corpus file and tool
MEMORY_TARGET = 256 * MIB

#: Writes one input: ``kind path size``; prints the number of pickle opcodes, or null.
#: Run by this interpreter (numpy, torch), in its own process to keep this one small.
GENERATE = """
import json, os, pickle, pickletools, sys
kind, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
tmp = path + ".part"
opcodes = None
if kind == "numpy":
    import numpy
    with open(tmp, "wb") as fh:
        pickle.dump(numpy.arange(size // 8, dtype=numpy.float64), fh, protocol=4)
elif kind == "ints":
    with open(tmp, "wb") as fh:
        pickle.dump(list(range(size)), fh, protocol=4)
    with open(tmp, "rb") as fh:
        opcodes = sum(1 for _ in pickletools.genops(fh))
else:
    import torch
    if kind == "tensors":
        obj = {f"layer.{i}.weight": torch.full((4,), float(i)) for i in range(size)}
    else:
        obj = torch.arange(size // 4, dtype=torch.float32)
    torch.save(obj, tmp, _use_new_zipfile_serialization=kind != "torch-legacy")
os.replace(tmp, path)
print(json.dumps(opcodes))
"""

#: Runs one command with stdin from /dev/null and stdout + stderr to a file, in its own
#: session, kills the session after the timeout, and prints its wall time, CPU time, peak
#: RSS (from ``wait4``), exit status and whether it timed out, as JSON. It runs in a fresh,
#: small interpreter because the peak RSS the kernel reports starts at the peak memory of
#: the parent; it also reports that floor, its own VmHWM: a figure at the floor means
#: "at most this".
LAUNCHER = """
import json, os, signal, sys, time
argv, env, out, timeout = json.load(sys.stdin)
actions = [
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    (os.POSIX_SPAWN_DUP2, 1, 2),
]
expired = []
def kill(signum, frame):
    expired.append(True)
    os.killpg(pid, signal.SIGKILL)
signal.signal(signal.SIGALRM, kill)
start = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions, setsid=True)
signal.setitimer(signal.ITIMER_REAL, timeout)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
signal.setitimer(signal.ITIMER_REAL, 0)
with open("/proc/self/status") as own:
    floor = next(int(line.split()[1]) for line in own if line.startswith("VmHWM:"))
cpu = usage.ru_utime + usage.ru_stime
code = os.waitstatus_to_exitcode(status)
print(json.dumps([seconds, cpu, usage.ru_maxrss * 1024, floor * 1024, code, bool(expired)]))
"""


def output_of(*argv: str | Path, cwd: Path | None = None) -> str | None:
    """What a short command prints (stdout, else stderr), or None if it cannot run or fails."""
    try:
        done = subprocess.run(
            list(map(str, argv)), capture_output=True, text=True, check=True, cwd=cwd
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return (done.stdout or done.stderr).strip()


# --- the inputs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    array_bytes: int  # the numpy array and the single tensors
    tensors: int  # the state dict of small tensors
    ints: int  # list(range(ints))


FULL = Sizes(array_bytes=500 * MIB, tensors=20_000, ints=10_000_000)
QUICK = Sizes(array_bytes=32 * MIB, tensors=2_000, ints=1_000_000)


@dataclass(frozen=True)
class Input:
    title: str
    path: Path
    nbytes: int
    opcodes: int | None = None  # for the integer pickle: M opcodes/s
    rate_in_bytes: bool = False  # a single large buffer: GB/s


def ensure_inputs(folder: Path, sizes: Sizes) -> list[Input]:
    """The benchmark's large inputs, written on first use; ``inputs.json`` keeps what is
    known about each (its size, its opcode count) so that later runs reuse them."""
    folder.mkdir(parents=True, exist_ok=True)
    known_file = folder / "inputs.json"
    known: dict[str, dict[str, int | None]] = (
        json.loads(known_file.read_text()) if known_file.is_file() else {}
    )
    mib, n, ints = sizes.array_bytes // MIB, sizes.tensors, sizes.ints
    wanted = [
        ("numpy", f"numpy-{mib}m.pkl", sizes.array_bytes, f"numpy float64 {mib} MiB pickle"),
        ("torch-zip", f"torch-{mib}m.pt", sizes.array_bytes, f"torch {mib} MiB tensor, zip"),
        ("torch-legacy", f"torch-{mib}m-legacy.pt", sizes.array_bytes, f"torch {mib} MiB, legacy"),
        ("tensors", f"torch-{n}-tensors.pt", n, f"torch zip, {n:,} small tensors"),
        ("ints", f"ints-{ints}.pkl", ints, f"pickle of {ints:,} ints"),
    ]
    inputs = []
    for kind, name, size, title in wanted:
        path = folder / name
        entry = known.get(name)
        if entry is None or not path.is_file() or path.stat().st_size != entry["bytes"]:
            log(f"writing {path} (once; later runs reuse it)")
            done = subprocess.run(
                [sys.executable, "-c", GENERATE, kind, str(path), str(size)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                raise BenchError(f"could not write {path}:\n{done.stderr.strip()[-2000:]}")
            entry = {"bytes": path.stat().st_size, "opcodes": json.loads(done.stdout)}
            known[name] = entry
            known_file.write_text(json.dumps(known, indent=1) + "\n")
        opcodes = entry["opcodes"]
        single_buffer = kind in ("numpy", "torch-zip", "torch-legacy")
        inputs.append(Input(title, path, path.stat().st_size, opcodes, single_buffer))
    return inputs


@dataclass(frozen=True)
class CorpusFile:
    name: str
    path: Path
    technique: str
    malicious: bool  # the manifest's expects_detection


def ensure_corpus(folder: Path) -> list[CorpusFile]:
    """The test corpus, regenerated whenever its generator is newer than its manifest."""
    manifest = folder / "manifest.json"
    sources = (REPO / "tests" / "scanning_corpus").glob("*.py")
    newest = max(p.stat().st_mtime for p in sources)
    if not manifest.is_file() or manifest.stat().st_mtime < newest:
        log(f"writing the scanning corpus under {folder}")
        shutil.rmtree(folder, ignore_errors=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        generate = [sys.executable, "-m", "tests.scanning_corpus.generate", str(folder)]
        done = subprocess.run(generate, capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            raise BenchError(f"could not write the corpus:\n{done.stderr.strip()[-2000:]}")
    return [
        CorpusFile(s["name"], folder / s["path"], s["technique"], s["expects_detection"])
        for s in json.loads(manifest.read_text())
    ]


# --- the tools -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A scanner's command line, and how its exit status reads as a verdict.

    ``verdicts`` maps exit statuses to verdicts; any other status is ``error``. Exit status 1
    with a Python traceback in the output is ``error`` too: an uncaught exception.
    """

    name: str
    argv: Callable[[Path], list[str]]
    verdicts: dict[int, str]
    env: dict[str, str]
    version: str = ""

    def verdict(self, code: int, timed_out: bool, output: str) -> str:
        if timed_out:
            return "timeout"
        if code == 1 and "Traceback (most recent call last)" in output:
            return "error"
        return self.verdicts.get(code, "error")


#: Exit statuses, from each tool's documentation or source (the versions installed).
VERDICTS = {
    # bastion scan: 0 no finding >= low, 1 a finding >= low (scan.incomplete and
    # scan.unknown-format are medium), 2 usage error, 3 internal error.
    "bastion": {0: "clean", 1: "detected"},
    # modelscan: 0 no issue, 1 issues, 2 errors (even with issues), 3 nothing scanned (no
    # supported file, or the only one failed to parse), 4 usage error.
    "modelscan": {0: "clean", 1: "detected", 3: "skipped"},
    # picklescan: 0 no dangerous global, 1 dangerous globals, 2 scan error (even with some).
    "picklescan": {0: "clean", 1: "detected"},
    # fickling --check-safety: 0 likely safe, 1 unsafe, 2 parse error.
    "fickling": {0: "clean", 1: "detected"},
}


def find_tools(scratch: Path) -> list[Tool]:
    bastion = Path(sys.executable).with_name("bastion")
    if not bastion.exists():
        found = shutil.which("bastion")
        if found is None:
            raise BenchError("no `bastion` command: run `make venv` first")
        bastion = Path(found)
    venv = ensure_anchors(scratch / "venv-scanners")
    anchor_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bin_dir = venv / "bin"
    # fickling appends its JSON results to ./safety_results.json unless told otherwise.
    fickling = [str(bin_dir / "fickling"), "--check-safety", "--json-output", os.devnull]
    tools = [
        Tool(
            "bastion",
            lambda p: [str(bastion), "scan", str(p), "--format", "json"],
            VERDICTS["bastion"],
            dict(os.environ),
            output_of(bastion, "--version") or "unknown",
        ),
        Tool(
            "modelscan",
            lambda p: [str(bin_dir / "modelscan"), "-p", str(p)],
            VERDICTS["modelscan"],
            anchor_env,
        ),
        Tool(
            "picklescan",
            lambda p: [str(bin_dir / "picklescan"), "-p", str(p)],
            VERDICTS["picklescan"],
            anchor_env,
        ),
        Tool(
            "fickling",
            lambda p: [*fickling, str(p)],
            VERDICTS["fickling"],
            anchor_env,
        ),
    ]
    versions = anchor_versions(venv)
    return [
        Tool(t.name, t.argv, t.verdicts, t.env, t.version or versions.get(t.name, "unknown"))
        for t in tools
    ]


def ensure_anchors(venv: Path) -> Path:
    """The anchors' own virtual environment, created on first use."""
    stamp = venv / ".bench-installed"
    wanted = " ".join(ANCHOR_PACKAGES)
    if stamp.is_file() and stamp.read_text() == wanted:
        return venv
    log(f"installing {wanted} into {venv} (once)")
    try:
        venv_args = [sys.executable, "-m", "venv", "--clear", str(venv)]
        subprocess.run(venv_args, check=True, capture_output=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, *ANCHOR_PACKAGES], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"could not install {wanted} into {venv}: {exc.stderr}") from exc
    stamp.write_text(wanted)
    return venv


def anchor_versions(venv: Path) -> dict[str, str]:
    script = "import importlib.metadata as m, sys; print(*(m.version(n) for n in sys.argv[1:]))"
    found = output_of(venv / "bin" / "python", "-c", script, *ANCHORS)
    return dict(zip(ANCHORS, (found or "").split(), strict=False))


def bastion_source() -> str:
    """Where the code the ``bastion`` command runs comes from, and its git commit."""
    where = output_of(sys.executable, "-c", "import bastion; print(bastion.__path__[0])")
    if where is None:
        return "unknown"
    commit = output_of("git", "-C", where, "log", "-1", "--format=commit %h, %cs")
    if commit is None:
        return f"{where} (not a git checkout)"
    changed = output_of("git", "-C", where, "status", "--porcelain", "--", ".")
    return f"{where} ({commit}{', plus uncommitted changes' if changed else ''})"


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    seconds: float  # wall time
    cpu_seconds: float  # user + system
    peak_rss: int  # bytes
    rss_floor: int  # bytes: a peak this low means "at most this"
    verdict: str
    tail: str  # the end of the tool's output, kept for errors


def execute(tool: Tool, path: Path, timeout: float, workdir: Path) -> Run:
    """Scan ``path`` with ``tool`` through the launcher, in an empty working folder (no
    settings file there, and nothing the tool writes lands in the repository)."""
    out = workdir / "output.txt"
    job = json.dumps([tool.argv(path), tool.env, str(out), timeout]).encode()
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER]
    done = subprocess.run(launcher, input=job, capture_output=True, cwd=workdir, check=False)
    if done.returncode:
        raise BenchError(f"could not run {tool.name}: {done.stderr.decode(errors='replace')}")
    seconds, cpu, peak, floor, code, timed_out = json.loads(done.stdout)
    with out.open("rb") as fh:  # the output's end is enough (Bastion's JSON can be MiBs)
        fh.seek(max(0, out.stat().st_size - 64 * 1024))
        output = fh.read().decode(errors="replace")
    tail = "" if code == 0 else output.strip()[-600:]
    return Run(seconds, cpu, peak, floor, tool.verdict(code, timed_out, output), tail)


@dataclass(eq=False)
class Row:
    """One tool on one input, run several times."""

    tool: Tool
    input: Input
    runs: list[Run] = field(default_factory=list)

    def _median(self, value: Callable[[Run], float]) -> float:
        return statistics.median(map(value, self.runs))

    @property
    def seconds(self) -> float:
        return self._median(lambda r: r.seconds)

    @property
    def cpu_seconds(self) -> float:
        return self._median(lambda r: r.cpu_seconds)

    @property
    def peak_rss(self) -> int:
        return int(self._median(lambda r: r.peak_rss))

    @property
    def rss_text(self) -> str:
        floor = max(r.rss_floor for r in self.runs)
        peak = self.peak_rss
        return f"<={human_bytes(floor)}" if peak <= floor else human_bytes(peak)

    @property
    def verdict(self) -> str:
        return "/".join(dict.fromkeys(r.verdict for r in self.runs))

    @property
    def usable(self) -> bool:
        """Every run finished with a verdict: its time means something."""
        return all(r.verdict in ("clean", "detected") for r in self.runs)

    @property
    def rate(self) -> str:
        seconds = self.seconds
        if self.input.opcodes:
            return f"{self.input.opcodes / seconds / 1e6:.2f} Mop/s"
        if self.input.rate_in_bytes:
            return f"{self.input.nbytes / seconds / GB:.2f} GB/s"
        return "-"


def measure_inputs(
    inputs: Sequence[Input], tools: Sequence[Tool], runs: int, timeout: float, workdir: Path
) -> list[list[Row]]:
    """Each input in ``runs`` rounds, the tools interleaved in each; a tool that timed out
    is not run again on that input."""
    cases = []
    for item in inputs:
        log(f"measuring: {item.title} ({runs} round(s))")
        warm([item.path])
        rows = [Row(tool, item) for tool in tools]
        for _ in range(runs):
            for row in rows:
                if any(r.verdict == "timeout" for r in row.runs):
                    continue
                row.runs.append(execute(row.tool, item.path, timeout, workdir))
        cases.append(rows)
    return cases


@dataclass
class CorpusResult:
    tool: Tool
    runs: dict[str, Run] = field(default_factory=dict)  # by sample name


def scan_corpus(
    corpus: Sequence[CorpusFile], tools: Sequence[Tool], workdir: Path
) -> list[CorpusResult]:
    """Every corpus file once with every tool, each file on its own."""
    log(f"scanning the corpus: {len(corpus)} files, one at a time, with each tool")
    results = [CorpusResult(tool) for tool in tools]
    for sample in corpus:
        for result in results:
            result.runs[sample.name] = execute(result.tool, sample.path, CORPUS_TIMEOUT, workdir)
    return results


# --- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    text: str
    measured: str
    met: bool
    context: str


def inputs_table(cases: Sequence[Sequence[Row]]) -> list[str]:
    head = ("tool", "median", "rate", "CPU", "peak RSS", "verdict")
    widths = (12, 9, 12, 9, 10, 0)

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if i in (0, 5) else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    lines = [line(head)]
    for rows in cases:
        item = rows[0].input
        lines += ["", f"[{item.title}: {item.path.name}, {item.nbytes / 1e6:,.1f} MB]"]
        for row in rows:
            if not row.runs:
                lines.append(line((row.tool.name, "n/a", "", "", "", "")))
                continue
            rate = row.rate if row.usable else "-"
            verdict = row.verdict + (" (false positive)" if "detected" in row.verdict else "")
            cpu = f"{row.cpu_seconds:.2f} s"
            lines.append(
                line((row.tool.name, f"{row.seconds:.3f} s", rate, cpu, row.rss_text, verdict))
            )
    return lines


def corpus_table(corpus: Sequence[CorpusFile], results: Sequence[CorpusResult]) -> list[str]:
    malicious = [s for s in corpus if s.malicious]
    benign = [s for s in corpus if not s.malicious]
    lines = [
        f"{'tool':<12}  {'detected':>9}  {'error':>5}  {'skip':>4}  {'t/o':>3}"
        f"  {'false pos.':>10}  {'error':>5}  {'all files':>9}  {'per file':>8}  {'max RSS':>9}",
        f"{'':<12}  {f'of {len(malicious)} malicious':>27}"
        f"  {f'of {len(benign)} benign':>17}  {'(sum)':>9}  {'(median)':>8}",
    ]
    for result in results:

        def count(
            samples: Sequence[CorpusFile], verdict: str, result: CorpusResult = result
        ) -> int:
            return sum(result.runs[s.name].verdict == verdict for s in samples)

        runs = list(result.runs.values())
        total = sum(r.seconds for r in runs)
        per_file = statistics.median(r.seconds for r in runs)
        peak = max(r.peak_rss for r in runs)
        lines.append(
            f"{result.tool.name:<12}  {count(malicious, 'detected'):>9}"
            f"  {count(malicious, 'error'):>5}  {count(malicious, 'skipped'):>4}"
            f"  {count(malicious, 'timeout'):>3}  {count(benign, 'detected'):>10}"
            f"  {count(benign, 'error') + count(benign, 'timeout'):>5}  {total:>7.1f} s"
            f"  {per_file:>6.3f} s  {human_bytes(peak):>9}"
        )
    return lines


def corpus_details(
    corpus: Sequence[CorpusFile], results: Sequence[CorpusResult], verbose: bool
) -> list[str]:
    """Bastion's misses and false positives; with ``verbose``, every file's verdicts."""
    ours = results[0]
    misses = [s.name for s in corpus if s.malicious and ours.runs[s.name].verdict != "detected"]
    false = [s.name for s in corpus if not s.malicious and ours.runs[s.name].verdict != "clean"]
    lines = [
        f"bastion: malicious files not detected: {', '.join(misses) or 'none'}",
        f"bastion: benign files not clean: {', '.join(false) or 'none'}",
    ]
    if verbose:
        names = [r.tool.name for r in results]
        lines += ["", f"{'file':<50}  {'expected':<9}  " + "  ".join(f"{n:<10}" for n in names)]
        for s in corpus:
            verdicts = "  ".join(f"{r.runs[s.name].verdict:<10}" for r in results)
            expected = "detected" if s.malicious else "clean"
            # b/ or m/, its top folder (a sharded sample's path is one folder deeper).
            where = "m" if s.malicious else "b"
            lines.append(f"{where}/{s.name:<48}  {expected:<9}  {verdicts}")
    return lines


def targets(
    cases: Sequence[Sequence[Row]], corpus: Sequence[CorpusFile], results: Sequence[CorpusResult]
) -> list[Target]:
    """The issue's targets, on Bastion's rows (the first of each case)."""
    found = []
    for rows in cases:
        ours, item = rows[0], rows[0].input
        if not ours.runs:
            continue
        anchors = [r for r in rows[1:] if r.runs and r.verdict == "clean"]
        best = min(anchors, key=lambda r: r.seconds, default=None)
        context = f"fastest clean anchor: {best.tool.name} {best.seconds:.2f} s" if best else ""
        if item.rate_in_bytes:
            gbps = item.nbytes / ours.seconds / GB if ours.usable else 0.0
            found.append(Target(f"{item.title}: >= 1 GB/s", f"{gbps:.2f} GB/s", gbps >= 1, context))
        elif item.opcodes:
            mops = item.opcodes / ours.seconds / 1e6 if ours.usable else 0.0
            found.append(
                Target(f"{item.title}: >= 1 M opcodes/s", f"{mops:.2f} Mop/s", mops >= 1, context)
            )
        else:
            seconds = ours.seconds
            met = ours.usable and seconds < 2
            found.append(Target(f"{item.title}: < 2 s", f"{seconds:.3f} s", met, context))
    peaks = [r.peak_rss for rows in cases for r in rows[0].runs]
    peaks += [r.peak_rss for r in results[0].runs.values()]
    peak = max(peaks)
    found.append(
        Target(
            "peak RSS < 256 MiB on every input (corpus included)",
            human_bytes(peak),
            peak < MEMORY_TARGET,
            "",
        )
    )
    return found


def targets_table(found: Sequence[Target]) -> list[str]:
    lines = [f"{'targets (from the issue)':<60}  {'measured':>11}  verdict  for context"]
    for t in found:
        verdict = "met" if t.met else "MISSED"
        lines.append(f"  {t.text:<58}  {t.measured:>11}  {verdict:<7}  {t.context}".rstrip())
    return lines


def header(
    tools: Sequence[Tool],
    inputs: Sequence[Input],
    corpus: Sequence[CorpusFile],
    runs: int,
    timeout: float,
    quick: bool,
    load: tuple[float, float],
) -> list[str]:
    libraries = "import numpy, torch; print(numpy.__version__, torch.__version__)"
    writers = output_of(sys.executable, "-c", libraries) or "unknown unknown"
    numpy_version, torch_version = writers.split()
    malicious = sum(s.malicious for s in corpus)
    lines = [
        f"Bastion scanning benchmark, {date.today():%Y-%m-%d}" + (", QUICK" if quick else ""),
        f"machine: {machine()}; 1-minute load average {load[0]:.2f} before the "
        f"runs, {load[1]:.2f} after",
        f"bastion source: {bastion_source()}",
        *(f"{t.name}: {t.version}" for t in tools),
        f"inputs written with numpy {numpy_version}, torch {torch_version}; corpus: "
        f"{len(corpus)} files ({malicious} malicious, {len(corpus) - malicious} benign) from "
        "tests/scanning_corpus",
        f"medians of {runs} round(s), tools interleaved in each round; each input read once "
        "before its case (warm page cache); each corpus file scanned once per tool, on its own; "
        f"timeouts: {timeout:g} s per input, {CORPUS_TIMEOUT:g} s per corpus file",
        "commands: bastion scan PATH --format json | modelscan -p PATH | picklescan -p PATH | "
        "fickling --check-safety --json-output /dev/null PATH",
        "verdict from the exit status: detected (unsafe), clean, error (could not scan, or "
        "crashed), skipped (modelscan: nothing scanned), timeout; rate: GB/s = 10^9 bytes/s, "
        "Mop/s = 10^6 pickle opcodes/s, both end to end (start-up included), shown only where "
        "the tool finished with a verdict; CPU: user + system seconds; peak RSS from wait4 "
        "(<=N: no more than the launcher's own N)",
    ]
    if quick:
        lines.append("QUICK: small inputs and few runs; a smoke check, not comparable with targets")
    return lines


def save_results(
    path: Path,
    cases: Sequence[Sequence[Row]],
    corpus: Sequence[CorpusFile],
    results: Sequence[CorpusResult],
) -> None:
    """Every run's figures and verdicts, for a closer look than the table."""
    document = {
        "inputs": [
            {
                "input": rows[0].input.path.name,
                "tool": row.tool.name,
                "runs": [vars(r) for r in row.runs],
            }
            for rows in cases
            for row in rows
        ],
        "corpus": [
            {
                "name": s.name,
                "technique": s.technique,
                "malicious": s.malicious,
                **{r.tool.name: vars(r.runs[s.name]) for r in results},
            }
            for s in corpus
        ],
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark bastion scan against modelscan, picklescan and fickling."
    )
    add_common_options(parser, default_runs=3, quick_help="32 MiB, 2,000 tensors, 1,000,000 ints")
    parser.add_argument(
        "--timeout", type=float, default=180, help="seconds per scan of an input (default 180)"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also print every corpus file's verdicts"
    )
    return parse_common(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scratch: Path = args.scratch.resolve()
    # Let the tools cache their bytecode (under the scratch folder), as on a normal install.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    tools = find_tools(scratch)
    folder = scratch / "scan-inputs"
    inputs = ensure_inputs(folder, QUICK if args.quick else FULL)
    corpus = ensure_corpus(folder / "corpus")

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as work:
        workdir = Path(work)
        # First: it also warms every tool's bytecode cache for the timed rounds.
        results = scan_corpus(corpus, tools, workdir)
        cases = measure_inputs(inputs, tools, args.runs, args.timeout, workdir)
    load_after = os.getloadavg()[0]
    save_results(scratch / "scan-results.json", cases, corpus, results)

    report = [
        *header(tools, inputs, corpus, args.runs, args.timeout, args.quick, (load, load_after)),
        "",
        *inputs_table(cases),
        "",
        "[corpus: each file on its own]",
        *corpus_table(corpus, results),
        "",
        *corpus_details(corpus, results, args.verbose),
        "",
        *targets_table(targets(cases, corpus, results)),
        "",
        f"every run's figures and verdicts: {scratch / 'scan-results.json'}",
    ]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"error: {exc}")
        sys.exit(1)
