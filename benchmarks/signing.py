"""Benchmark Bastion's model signing against the reference tool and the hardware.

Run it with ``make bench``, or ``.venv/bin/python benchmarks/signing.py [--runs N] [--quick]``.

In one run it:

* builds (once, then reuses) under a scratch folder (default ``.bench/``) a
  2 GiB model, 4 x 512 MiB of random data plus a few small files, and a model
  of 10,000 files of 1 KiB in 100 subfolders (``--quick``: 4 x 64 MiB and
  1,000 files, a smoke check);
* installs the reference tool, ``model-signing==1.1.1`` plus ``pyopenssl``
  (which 1.1.1 imports without declaring), in its own virtual environment,
  ``.bench/venv-model-signing``;
* times ``bastion sign``/``verify`` and the reference's ``sign``/``verify``
  through their command lines, so both pay start-up, with the same unencrypted
  EC P-256 key and signatures written outside the model folders; for what the
  reference's command line cannot do (BLAKE3, shards) its Python API is used;
* times ``openssl dgst -sha256`` and ``b3sum`` on the same files: the hardware
  ceiling;
* prints medians, throughput, CPU time, peak RSS, ratios and the issue's
  targets as a plain text table on stdout; progress goes to stderr.

Each case is timed in rounds that interleave the tools, after an untimed round,
with every model file read once before (warm page cache), so that the tools and
the hardware ceiling share the noise of a busy machine. Standard library only;
Linux only (peak RSS from ``wait4`` and ``/proc``).
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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from _bench import (
    CHUNK,
    GB,
    MIB,
    BenchError,
    add_common_options,
    human_bytes,
    log,
    machine,
    parse_common,
    warm,
)

SETTLE_SECONDS = 2.5  # the digest cache ignores files changed in the last 2 seconds
REFERENCE_PACKAGES = ("model-signing==1.1.1", "pyopenssl")
INSTALL_B3SUM = "apt-get install b3sum"
INSTALL_OPENSSL = "apt-get install openssl"

#: The reference's Python API, for what its command line cannot do (BLAKE3, shards).
#: Verification is given the hashing configuration too: guessed from the signature,
#: 1.1.1 reads the shard size as a float and fails.
REFERENCE_API = """
import sys
from model_signing import hashing, signing, verifying

action, model, key, signature, algorithm, shard_size = sys.argv[1:]
config = hashing.Config()
if int(shard_size):
    config.use_shard_serialization(hashing_algorithm=algorithm, shard_size=int(shard_size))
else:
    config.use_file_serialization(hashing_algorithm=algorithm)
if action == "sign":
    tool = signing.Config().use_elliptic_key_signer(private_key=key)
else:
    tool = verifying.Config().use_elliptic_key_verifier(public_key=key)
tool.set_hashing_config(config)
getattr(tool, action)(model, signature)
"""

#: The small files that come with a model's weights.
COMPANION_FILES = {
    "config.json": b'{"architectures": ["BenchModel"], "hidden_size": 4096}\n' * 20,
    "generation_config.json": b'{"max_new_tokens": 256, "temperature": 0.7}\n',
    "tokenizer.json": b'{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}}\n' * 4000,
    "README.md": b"# Bench model\n\nRandom weights for benchmarking Bastion.\n",
}


# --- the models ----------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    large_files: int
    large_file_size: int
    shard_size: int  # a quarter of a large file: parallelism within one file
    small_files: int
    small_file_size: int = 1024
    small_dirs: int = 100


FULL = Sizes(large_files=4, large_file_size=512 * MIB, shard_size=128 * MIB, small_files=10_000)
QUICK = Sizes(large_files=4, large_file_size=64 * MIB, shard_size=16 * MIB, small_files=1_000)

#: A model's files: relative path -> size of random content, or fixed content.
Layout = dict[str, int | bytes]


@dataclass(frozen=True)
class Model:
    title: str  # short, for section titles
    description: str
    root: Path
    files: tuple[Path, ...]
    nbytes: int

    @property
    def key(self) -> str:
        return self.root.name


def large_model(scratch: Path, sizes: Sizes) -> Model:
    n, size = sizes.large_files, sizes.large_file_size
    layout: Layout = {f"model-{i + 1:05d}-of-{n:05d}.safetensors": size for i in range(n)}
    layout.update(COMPANION_FILES)
    return ensure_model(
        scratch / "models" / f"large-{n}x{size // MIB}m",
        title=f"{human_bytes(n * size)} model",
        description=f"{n} x {human_bytes(size)} of random data + {len(COMPANION_FILES)} small "
        f"files ({', '.join(COMPANION_FILES)})",
        layout=layout,
    )


def small_model(scratch: Path, sizes: Sizes) -> Model:
    n, size, dirs = sizes.small_files, sizes.small_file_size, sizes.small_dirs
    layout: Layout = {f"part-{i % dirs:03d}/file-{i:05d}.bin": size for i in range(n)}
    return ensure_model(
        scratch / "models" / f"small-{n}",
        title=f"{n:,} small files",
        description=f"{n:,} x {human_bytes(size)} of random data in {dirs} subfolders",
        layout=layout,
    )


def ensure_model(root: Path, *, title: str, description: str, layout: Layout) -> Model:
    """The model at ``root`` with exactly ``layout``; files already of the right size are kept."""
    expected = {root / name: content for name, content in layout.items()}
    for stray in set(files_under(root)) - expected.keys():
        stray.unlink()
    announced = False
    for path, content in expected.items():
        size = len(content) if isinstance(content, bytes) else content
        if not path.is_file() or path.stat().st_size != size:
            if not announced:
                log(f"writing the {title} under {root} (once; later runs reuse it)")
                announced = True
            write_file(path, content)
    files = tuple(sorted(expected))
    return Model(title, description, root, files, total_size(files))


def files_under(root: Path) -> Iterator[Path]:
    for folder, _dirs, names in os.walk(root):
        for name in names:
            yield Path(folder, name)


def write_file(path: Path, content: int | bytes) -> None:
    """Write fixed content, or that many random bytes; a half-written file is never left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as fh:
        if isinstance(content, bytes):
            fh.write(content)
        else:
            left = content
            while left:
                left -= fh.write(os.urandom(min(left, CHUNK)))
    tmp.replace(path)


def wait_until_settled(files: Sequence[Path]) -> None:
    """Sleep until no file has changed within the digest cache's racy window."""
    newest = max(max(st.st_mtime, st.st_ctime) for st in map(os.stat, files))
    delay = newest + SETTLE_SECONDS - time.time()
    if delay > 0:
        time.sleep(delay)


# --- running commands ------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One command, or several started together; done when all have exited."""

    argvs: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, *argv: str | Path) -> Job:
        return cls((tuple(map(str, argv)),))

    def __str__(self) -> str:
        shown = [[w if "\n" not in w else "<script>" for w in a[:7]] for a in self.argvs]
        return " & ".join(" ".join(a) + (" ..." if len(a) == 7 else "") for a in shown)


#: Starts a job's commands together and prints their wall time, CPU time and peak RSS
#: (from ``wait4``) as JSON. It runs in a fresh, small interpreter because the peak RSS the
#: kernel reports for a process starts at the peak memory of the process that started it
#: (exec records the old address space's high-water mark): ~9 MiB here, where the benchmark
#: itself would impose its own, larger figure. It also reports that floor, its own VmHWM:
#: a figure at the floor means "at most this".
LAUNCHER = """
import json, os, sys, time
argvs = json.load(sys.stdin)
quiet = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
quiet += [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
start = time.perf_counter()
pids = [os.posix_spawnp(argv[0], argv, os.environ, file_actions=quiet) for argv in argvs]
with open("/proc/self/status") as own:
    floor = next(int(line.split()[1]) for line in own if line.startswith("VmHWM:"))
cpu, peak, failed = 0.0, 0, 0
for pid in pids:
    _, status, usage = os.wait4(pid, 0)
    cpu += usage.ru_utime + usage.ru_stime
    peak = max(peak, usage.ru_maxrss)
    failed = failed or os.waitstatus_to_exitcode(status)
seconds = time.perf_counter() - start
print(json.dumps([seconds, cpu, peak * 1024, floor * 1024, failed]))
"""


@dataclass(frozen=True)
class Sample:
    seconds: float  # wall time
    cpu_seconds: float  # user + system time of the job's processes
    peak_rss: int  # bytes: the largest of the job's processes
    rss_floor: int  # bytes: peak RSS this low means "at most this"


def execute(job: Job) -> Sample:
    """Run ``job`` through the launcher: its figures. Raise if it fails."""
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER]
    with tempfile.TemporaryFile() as errors:
        argvs = json.dumps(job.argvs).encode()  # on stdin: one argument is limited to 128 KiB
        done = subprocess.run(
            launcher, input=argvs, stdout=subprocess.PIPE, stderr=errors, check=False
        )
        if done.returncode:  # the launcher itself failed: a command could not be started
            figures, failure = [], "could not be started"
        else:
            *figures, status = json.loads(done.stdout)
            failure = f"failed with exit status {status}" if status else ""
        if failure:
            errors.seek(0)
            tail = errors.read().decode(errors="replace").strip()[-2000:]
            raise BenchError(f"`{job}` {failure}:\n{tail}")
    return Sample(*figures)


def output_of(*argv: str | Path) -> str | None:
    """What a short command prints (stdout, else stderr), or None if it cannot run or fails."""
    try:
        done = subprocess.run(list(map(str, argv)), capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return (done.stdout or done.stderr).strip()


def first_line(*argv: str | Path) -> str:
    """The first line a short command prints (a version), or that it is unavailable."""
    output = output_of(*argv)
    return output.splitlines()[0] if output else "unavailable"


def balanced(files: Sequence[Path], parts: int) -> list[list[Path]]:
    """``files`` in at most ``parts`` groups of about equal total size."""
    groups: list[list[Path]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for f in sorted(files, key=lambda p: p.stat().st_size, reverse=True):
        i = loads.index(min(loads))
        groups[i].append(f)
        loads[i] += f.stat().st_size
    return [g for g in groups if g]


# --- the tools -----------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """How a model is hashed: the algorithm, and whole files or fixed-size shards."""

    hash_type: str = "sha256"
    shard_size: int = 0

    @property
    def key(self) -> str:
        return f"{self.hash_type}-{'shards' if self.shard_size else 'files'}"

    @property
    def method(self) -> str:
        return f"shards of {human_bytes(self.shard_size)}" if self.shard_size else "files"

    @property
    def title(self) -> str:
        return f"{self.hash_type}, {self.method}"

    @property
    def bastion_flags(self) -> list[str]:
        flags = ["--hash", self.hash_type]
        if self.shard_size:
            flags += ["--method", "shards", "--shard-size", str(self.shard_size)]
        return flags

    @property
    def reference_cli_can(self) -> bool:
        """The reference's command line signs and verifies only SHA-256 whole files."""
        return self.hash_type == "sha256" and not self.shard_size


@dataclass(frozen=True)
class Tools:
    """Each tool's command for a job, or None (then ``missing`` says why and what to do)."""

    scratch: Path
    bastion: Path
    reference_venv: Path | None
    openssl: str | None
    b3sum: str | None
    missing: dict[str, str]

    @property
    def key(self) -> str:
        return str(self.scratch / "keys" / "bench")

    def signature(self, name: str) -> Path:
        return self.scratch / "signatures" / f"{name}.sig"

    def cache(self, name: str) -> Path:
        return self.scratch / "cache" / f"{name}.sqlite"

    def bastion_sign(self, model: Path, signature: Path, mode: Mode) -> Job:
        key = ["--key", f"{self.key}.key"]
        return Job.of(
            self.bastion, "sign", model, *key, "--signature", signature, *mode.bastion_flags
        )

    def bastion_verify(self, model: Path, signature: Path, cache: Path | None = None) -> Job:
        key = ["--public-key", f"{self.key}.pub"]
        cache_flags = ["--cache", str(cache)] if cache else []
        return Job.of(self.bastion, "verify", model, *key, "--signature", signature, *cache_flags)

    def reference_sign(self, model: Path, signature: Path, mode: Mode) -> Job | None:
        return self._reference("sign", "--private_key", f"{self.key}.key", model, signature, mode)

    def reference_verify(self, model: Path, signature: Path, mode: Mode) -> Job | None:
        return self._reference("verify", "--public_key", f"{self.key}.pub", model, signature, mode)

    def _reference(
        self, action: str, key_flag: str, key: str, model: Path, signature: Path, mode: Mode
    ) -> Job | None:
        """The reference's command line where it can, else its API (same start-up cost)."""
        if self.reference_venv is None:
            return None
        bin_dir = self.reference_venv / "bin"
        if mode.reference_cli_can:
            cli = bin_dir / "model_signing"
            return Job.of(cli, action, "key", model, key_flag, key, "--signature", signature)
        api = (bin_dir / "python", "-c", REFERENCE_API, action, model, key, signature)
        return Job.of(*api, mode.hash_type, str(mode.shard_size))

    def openssl_sha256(self, files: Sequence[Path], processes: int) -> Job | None:
        if self.openssl is None:
            return None
        groups = balanced(files, processes)
        return Job(tuple((self.openssl, "dgst", "-sha256", *map(str, g)) for g in groups))

    def b3sum_all(self, files: Sequence[Path]) -> Job | None:
        return Job.of(self.b3sum, *files) if self.b3sum else None

    def bastion_version(self) -> Job:
        return Job.of(self.bastion, "--version")

    def reference_version(self) -> Job | None:
        if self.reference_venv is None:
            return None
        return Job.of(self.reference_venv / "bin" / "model_signing", "--version")

    def versions(self) -> dict[str, str]:
        jobs = {
            "bastion": self.bastion_version(),
            "model_signing": self.reference_version(),
            "openssl": Job.of(self.openssl, "version") if self.openssl else None,
            "b3sum": Job.of(self.b3sum, "--version") if self.b3sum else None,
        }
        versions = {
            name: first_line(*job.argvs[0]) if job else f"n/a: {self.missing[name]}"
            for name, job in jobs.items()
        }
        return {"bastion source": bastion_source(), **versions}


def bastion_source() -> str:
    """Where the code the ``bastion`` command runs comes from, and its git commit."""
    where = first_line(sys.executable, "-c", "import bastion; print(bastion.__path__[0])")
    commit = output_of("git", "-C", where, "log", "-1", "--format=commit %h, %cs")
    if commit is None:
        return f"{where} (not a git checkout)"
    changed = output_of("git", "-C", where, "status", "--porcelain", "--", ".")
    return f"{where} ({commit}{', plus uncommitted changes' if changed else ''})"


def find_tools(scratch: Path) -> Tools:
    bastion = Path(sys.executable).with_name("bastion")
    if not bastion.exists():
        found = shutil.which("bastion")
        if found is None:
            raise BenchError("no `bastion` command: run `make venv` first")
        bastion = Path(found)
    missing = {}
    openssl, b3sum = shutil.which("openssl"), shutil.which("b3sum")
    for name, path, install in (
        ("openssl", openssl, INSTALL_OPENSSL),
        ("b3sum", b3sum, INSTALL_B3SUM),
    ):
        if path is None:
            missing[name] = f"not installed; install it with `{install}`"
            log(f"{name} {missing[name]}; its rows read n/a")
    venv, why = ensure_reference(scratch / "venv-model-signing")
    if venv is None:
        missing["model_signing"] = why
    return Tools(scratch, bastion, venv, openssl, b3sum, missing)


def ensure_reference(venv: Path) -> tuple[Path | None, str]:
    """The reference tool's own virtual environment, created on first use."""
    stamp = venv / ".bench-installed"
    wanted = " ".join(REFERENCE_PACKAGES)
    if stamp.is_file() and stamp.read_text() == wanted:
        return venv, ""
    log(f"installing {wanted} into {venv} (once)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, *REFERENCE_PACKAGES], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        why = f"could not install {wanted} into {venv}: {str(exc.stderr).strip()[-300:]}"
        log(f"{why}; its rows read n/a")
        return None, why
    stamp.write_text(wanted)
    return venv, ""


def ensure_keys(tools: Tools) -> None:
    """An unencrypted EC P-256 key pair; the PEM works for both tools."""
    if all(Path(f"{tools.key}{ext}").is_file() for ext in (".key", ".pub")):
        return
    log(f"generating the key pair {tools.key}.key/.pub")
    keygen = ("keygen", "--type", "ecdsa-p256", "--out", tools.key, "--unencrypted", "--force")
    execute(Job.of(tools.bastion, *keygen))


# --- rows, sections, measuring --------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal from the issue, checked against a row's median."""

    text: str
    met: Callable[[Row], bool]
    measured: Callable[[Row], str]
    context: str  # what the issue says the reference tool does


def min_gbps(value: float, context: str) -> Target:
    return Target(
        f">= {value:g} GB/s",
        lambda row: (row.gbps or 0) >= value,
        lambda row: f"{row.gbps or 0:.2f} GB/s",
        context,
    )


def max_seconds(value: float, context: str) -> Target:
    return Target(
        f"< {value:g} s",
        lambda row: (row.seconds or 1e9) < value,
        lambda row: f"{row.seconds or 0:.3f} s",
        context,
    )


SHA256_TARGET = min_gbps(2.5, "reference ~1 GB/s")
BLAKE3_TARGET = min_gbps(5, "reference ~1 GB/s")
SMALL_FILES_TARGET = max_seconds(0.5, "reference ~4 s")
STARTUP_TARGET = max_seconds(0.2, "reference ~0.5 s")


@dataclass(eq=False)
class Row:
    """One command timed several times, or n/a (``job`` None) for the reason in ``missing``."""

    step: str
    tool: str
    job: Job | None
    missing: str = ""
    nbytes: int | None = None
    baseline: Row | None = None  # the reference tool's row for the same step
    ceiling: Row | None = None  # the hardware's row for the same bytes
    target: Target | None = None
    samples: list[Sample] = field(default_factory=list)

    def _median(self, value: Callable[[Sample], float]) -> float | None:
        return statistics.median(map(value, self.samples)) if self.samples else None

    @property
    def seconds(self) -> float | None:
        return self._median(lambda s: s.seconds)

    @property
    def cpu_seconds(self) -> float | None:
        return self._median(lambda s: s.cpu_seconds)

    @property
    def peak_rss(self) -> int | None:
        peak = self._median(lambda s: s.peak_rss)
        return None if peak is None else int(peak)

    @property
    def rss_text(self) -> str:
        """The median peak RSS, or "<=" the launcher's floor when it is no higher."""
        peak = self.peak_rss
        if peak is None:
            return "-"
        floor = max(s.rss_floor for s in self.samples)
        return f"<={human_bytes(floor)}" if peak <= floor else human_bytes(peak)

    @property
    def gbps(self) -> float | None:
        seconds = self.seconds
        return self.nbytes / seconds / GB if seconds and self.nbytes else None


@dataclass
class Phase:
    """Rows measured together, runs interleaved, after an optional untimed preparation."""

    rows: list[Row]
    prepare: Callable[[], None] | None = None


@dataclass
class Section:
    title: str
    phases: list[Phase]
    warm: Sequence[Path] = ()
    runs: int | None = None  # None: the --runs value

    @property
    def rows(self) -> list[Row]:
        return [row for phase in self.phases for row in phase.rows]


def measure(section: Section, runs: int) -> None:
    """Time every row after one untimed round; rounds interleave the tools to share the noise."""
    log(f"measuring: {section.title}")
    warm(section.warm)
    for phase in section.phases:
        jobs = [(row, row.job) for row in phase.rows if row.job is not None]
        if jobs and phase.prepare is not None:
            phase.prepare()
        for _row, job in jobs:  # warm-up: bytecode, page cache, signatures for verify
            execute(job)
        for _ in range(section.runs or runs):
            for row, job in jobs:
                row.samples.append(execute(job))


# --- the cases ----------------------------------------------------------------------------


def openssl_row(tools: Tools, files: Sequence[Path], processes: int) -> Row:
    plural = "es" if processes > 1 else ""
    job = tools.openssl_sha256(files, processes)
    tool = f"openssl dgst -sha256 x{processes} process{plural}"
    return Row("hash", tool, job, tools.missing.get("openssl", ""), total_size(files))


def b3sum_row(tools: Tools, files: Sequence[Path]) -> Row:
    job = tools.b3sum_all(files)
    return Row("hash", "b3sum (all cores)", job, tools.missing.get("b3sum", ""), total_size(files))


def total_size(files: Sequence[Path]) -> int:
    return sum(f.stat().st_size for f in files)


def sign_verify_section(
    tools: Tools,
    model: Model,
    mode: Mode,
    ceilings: Sequence[Row],
    target: Target,
    *,
    with_cache: bool = False,
) -> tuple[Section, Row]:
    """Sign, then verify, with each tool; optionally re-verify with Bastion's digest cache.

    The hardware ceiling is timed in the same rounds, under the same noise; the
    first of ``ceilings`` is the one compared with. Returns the section and
    Bastion's sign row.
    """
    name = f"{model.key}-{mode.key}"
    ours, theirs = tools.signature(f"{name}-bastion"), tools.signature(f"{name}-reference")
    missing = tools.missing.get("model_signing", "")
    ref_sign = Row("sign", "model_signing", tools.reference_sign(model.root, theirs, mode), missing)
    ref_verify = Row(
        "verify", "model_signing", tools.reference_verify(model.root, theirs, mode), missing
    )
    sign = Row("sign", "bastion", tools.bastion_sign(model.root, ours, mode), baseline=ref_sign)
    verify = Row("verify", "bastion", tools.bastion_verify(model.root, ours), baseline=ref_verify)
    for row in (ref_sign, ref_verify, sign, verify):
        row.nbytes, row.ceiling = model.nbytes, ceilings[0]
    sign.target = verify.target = target
    # In each round every sign runs before the verify that reads its signature.
    phases = [Phase([*ceilings, sign, ref_sign, verify, ref_verify])]
    if with_cache:
        phases.append(cache_phase(tools, model, ours, ref_verify, name))
    return Section(f"{model.title}, {mode.title}", phases, model.files), sign


def cache_phase(tools: Tools, model: Model, signature: Path, baseline: Row, name: str) -> Phase:
    """``bastion verify --cache``, timed after one untimed run has filled the cache."""
    cache = tools.cache(name)
    job = tools.bastion_verify(model.root, signature, cache)

    def fill() -> None:
        cache.unlink(missing_ok=True)
        wait_until_settled(model.files)  # else the cache would not keep the digests
        execute(job)

    row = Row("re-verify", "bastion --cache (cache hit)", job, nbytes=model.nbytes)
    row.baseline = baseline
    return Phase([row], prepare=fill)


def single_file_section(tools: Tools, model: Model, shard_size: int) -> tuple[Section, Row, Row]:
    """One of the large files alone, a model a quarter of the size (for the memory check),
    hashed whole (one stream: one core) and in shards (every core, within the one file).

    Returns the section and the two tools' whole-file sign rows.
    """
    single = max(model.files, key=lambda f: f.stat().st_size)
    size = single.stat().st_size
    missing = tools.missing.get("model_signing", "")
    rows = [openssl_row(tools, [single], 1)]
    for mode in (Mode(), Mode(shard_size=shard_size)):
        name = f"{model.key}-single-{mode.key}"
        ref_job = tools.reference_sign(single, tools.signature(f"{name}-reference"), mode)
        ref = Row("sign", f"model_signing, {mode.method}", ref_job, missing, size)
        job = tools.bastion_sign(single, tools.signature(f"{name}-bastion"), mode)
        rows += [Row("sign", f"bastion, {mode.method}", job, nbytes=size, baseline=ref), ref]
    title = f"one {human_bytes(size)} file, sha256 (memory check; parallelism within a file)"
    return Section(title, [Phase(rows)], [single]), rows[1], rows[2]


def startup_section(runs: int, tools: Tools) -> Section:
    ref = Row(
        "start-up",
        "model_signing --version",
        tools.reference_version(),
        tools.missing.get("model_signing", ""),
    )
    ours = Row("start-up", "bastion --version", tools.bastion_version(), baseline=ref)
    ours.target = STARTUP_TARGET
    floor = Row("start-up", "python -c pass (floor)", Job.of(sys.executable, "-c", "pass"))
    return Section("command line", [Phase([ours, ref, floor])], runs=runs)


# --- the report -----------------------------------------------------------------------------

COLUMNS = ("step", "tool", "median", "GB/s", "CPU", "peak RSS", "vs ref", "vs ceil", "target")
WIDTHS = (9, 33, 8, 6, 7, 9, 6, 7, 0)
RIGHT_ALIGNED = {2, 3, 4, 5, 6, 7}


def verdict(row: Row) -> str:
    return "met" if row.target is not None and row.target.met(row) else "MISSED"


def cells(row: Row) -> tuple[str, ...]:
    seconds = row.seconds
    if seconds is None:
        return (row.step, row.tool, "n/a", "", "", "", "", "", "")
    baseline = row.baseline.seconds if row.baseline else None
    ceiling = row.ceiling.gbps if row.ceiling else None
    return (
        row.step,
        row.tool,
        f"{seconds:.3f} s",
        f"{row.gbps:.2f}" if row.gbps else "-",
        f"{row.cpu_seconds:.2f} s" if row.cpu_seconds is not None else "-",
        row.rss_text,
        f"{baseline / seconds:.2f}x" if baseline else "",
        f"{row.gbps / ceiling:.0%}" if ceiling and row.gbps else "",
        f"{row.target.text}: {verdict(row)}" if row.target else "",
    )


def table_line(values: Sequence[str]) -> str:
    return "  ".join(
        v.rjust(w) if i in RIGHT_ALIGNED else v.ljust(w)
        for i, (v, w) in enumerate(zip(values, WIDTHS, strict=True))
    ).rstrip()


def render_table(sections: Sequence[Section]) -> list[str]:
    lines = [table_line(COLUMNS)]
    missing: dict[str, None] = {}  # ordered set
    for section in sections:
        lines += ["", f"[{section.title}]"]
        for row in section.rows:
            lines.append(table_line(cells(row)))
            if row.job is None:
                missing[f"{row.tool}: {row.missing}"] = None
    if missing:
        lines += ["", "n/a:", *(f"  {m}" for m in missing)]
    return lines


def memory_is_flat(small: int, large: int) -> bool:
    """Flat: at most 10% (or 8 MiB) more peak RSS for a model four times the size."""
    return large <= max(small * 1.10, small + 8 * MIB)


def render_memory(pairs: Sequence[tuple[Row, Row]]) -> tuple[list[str], bool | None]:
    """Each tool's peak RSS signing one large file and the whole model; Bastion's verdict.

    ``pairs`` holds (one file, whole model) sign rows, Bastion's first.
    """
    small_bytes, large_bytes = (human_bytes(r.nbytes or 0) for r in pairs[0])
    lines = [f"peak RSS signing (median)   {small_bytes:>10}  {large_bytes:>10}   growth"]
    verdicts: list[bool | None] = []
    for small, large in pairs:
        tool = large.tool
        if small.peak_rss is None or large.peak_rss is None:
            lines.append(f"  {tool:<24}  n/a")
            verdicts.append(None)
            continue
        growth = large.peak_rss - small.peak_rss
        flat = memory_is_flat(small.peak_rss, large.peak_rss)
        verdicts.append(flat)
        lines.append(
            f"  {tool:<24}  {human_bytes(small.peak_rss):>10}  {human_bytes(large.peak_rss):>10}"
            f"   {'+' if growth >= 0 else '-'}{human_bytes(abs(growth))}"
            f" ({'flat' if flat else 'grows'})"
        )
    return lines, verdicts[0]


def render_targets(sections: Sequence[Section], memory_flat: bool | None) -> list[str]:
    lines = [f"{'targets (from the issue)':<62}  {'measured':>11}  verdict  for context"]
    for section in sections:
        for row in section.rows:
            if row.target is None or row.seconds is None:
                continue
            what = f"{section.title}: {row.step} {row.target.text}"
            measured = row.target.measured(row)
            lines.append(f"  {what:<60}  {measured:>11}  {verdict(row):<7}  {row.target.context}")
    if memory_flat is not None:
        what = "peak RSS flat in model size (table above)"
        lines.append(f"  {what:<60}  {'':>11}  {'met' if memory_flat else 'MISSED':<7}")
    return lines


def header(
    tools: Tools, models: Sequence[Model], runs: int, quick: bool, load: tuple[float, float]
) -> list[str]:
    lines = [
        f"Bastion signing benchmark, {date.today():%Y-%m-%d}" + (", QUICK" if quick else ""),
        f"machine: {machine()}; 1-minute load average {load[0]:.2f} before the "
        f"runs, {load[1]:.2f} after",
        *(f"{name}: {version}" for name, version in tools.versions().items()),
        *(f"{m.title}: {m.description}, {m.nbytes / GB:.3f} GB" for m in models),
        f"medians of {runs} round(s) (start-up: of {startup_runs(runs)}) after an untimed one, "
        "tools interleaved in each round; warm page cache: every model file is read once "
        "(cat > /dev/null) before each case; Python bytecode cached under the scratch folder",
        "GB/s: 10^9 bytes/s of model; CPU: user + system seconds; peak RSS: of the largest "
        "process, from wait4 (<=N: no more than the launcher's own N); vs ref: model_signing's "
        "time / this row's (higher is faster); vs ceil: share of the throughput of the first "
        "hash row of the case (all cores), timed in the same rounds",
    ]
    if quick:
        lines.append("QUICK: small models and few runs; a smoke check, not comparable with targets")
    return lines


def startup_runs(runs: int) -> int:
    return max(10, 2 * runs)


# --- main ------------------------------------------------------------------------------------


def cache_bytecode(scratch: Path) -> None:
    """Let the tools' Python cache its bytecode (under the scratch folder), as on a normal
    install: a ``PYTHONDONTWRITEBYTECODE`` environment would make every run recompile
    the sources of an editable install."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark Bastion's sign/verify against model_signing and the hardware."
    )
    add_common_options(parser, default_runs=5, quick_help="4 x 64 MiB and 1,000 small files")
    return parse_common(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    scratch: Path = args.scratch.resolve()
    for sub in ("signatures", "cache", "keys"):
        (scratch / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    cache_bytecode(scratch)
    tools = find_tools(scratch)
    ensure_keys(tools)
    large, small = large_model(scratch, sizes), small_model(scratch, sizes)

    cores = os.cpu_count() or 1
    files, large_sign = sign_verify_section(
        tools,
        large,
        Mode(),
        [openssl_row(tools, large.files, cores), openssl_row(tools, large.files, 1)],
        SHA256_TARGET,
        with_cache=True,
    )
    shards, _ = sign_verify_section(
        tools,
        large,
        Mode(shard_size=sizes.shard_size),
        [openssl_row(tools, large.files, cores)],
        SHA256_TARGET,
    )
    blake3, _ = sign_verify_section(
        tools, large, Mode(hash_type="blake3"), [b3sum_row(tools, large.files)], BLAKE3_TARGET
    )
    small_files, _ = sign_verify_section(
        tools,
        small,
        Mode(),
        [openssl_row(tools, small.files, cores)],
        SMALL_FILES_TARGET,
        with_cache=True,
    )
    single, single_ours, single_ref = single_file_section(tools, large, sizes.shard_size)
    startup = startup_section(startup_runs(args.runs), tools)
    sections = [files, shards, blake3, small_files, single, startup]
    load = os.getloadavg()[0]
    for section in sections:
        measure(section, args.runs)

    assert large_sign.baseline is not None
    memory, flat = render_memory([(single_ours, large_sign), (single_ref, large_sign.baseline)])
    report = [
        *header(tools, [large, small], args.runs, args.quick, (load, os.getloadavg()[0])),
        "",
        *render_table(sections),
        "",
        *memory,
        "",
        *render_targets(sections, flat),
    ]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"error: {exc}")
        sys.exit(1)
