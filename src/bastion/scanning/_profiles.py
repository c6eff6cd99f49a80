"""Allowlist profiles: the globals ordinary ML pickles import, per library, versioned.

A pickle may import only what a profile allows. Everything else is a finding;
the denylist below only decides how severe it is and explains why. Entries are
exact ``module.name`` strings, or a module prefix with a rule on the name
(``sklearn`` classes, whose names are CamelCase).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["PROFILES", "PROFILE_VERSION", "Verdict", "judge_global"]

PROFILE_VERSION = "2026.11"

_BUILTINS = {
    f"builtins.{n}"
    for n in [
        "bool",
        "int",
        "float",
        "complex",
        "str",
        "bytes",
        "bytearray",
        "list",
        "tuple",
        "dict",
        "set",
        "frozenset",
        "slice",
        "range",
        "object",
        "NoneType",
        "Ellipsis",
        "NotImplemented",
    ]
}
_STDLIB = {
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.deque",
    "collections.Counter",
    "copyreg._reconstructor",
    "datetime.datetime",
    "datetime.date",
    "datetime.time",
    "datetime.timedelta",
    "datetime.timezone",
    "decimal.Decimal",
    "fractions.Fraction",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib.PurePosixPath",
    "argparse.Namespace",
    "_codecs.encode",  # protocol 2 encodes bytes as _codecs.encode(str, "latin1")
    "enum.Enum",
}
_NUMPY = {
    f"{core}.{name}"
    for core in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.core.numeric._frombuffer",  # protocol 5 out-of-band arrays
    "numpy._core.numeric._frombuffer",
    "numpy.ma.core._mareconstruct",
    "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor",
    "numpy.random.mtrand.RandomState",
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
    "numpy.random._mt19937.MT19937",
    "numpy.random._pcg64.PCG64",
}
_TORCH_REBUILD = {
    f"torch._utils.{n}"
    for n in [
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
        "_rebuild_nested_tensor",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_wrapper_subclass",
    ]
} | {
    "torch._tensor._rebuild_from_type_v2",
    "torch.serialization._get_layout",
    "torch.Size",
    "torch.device",
    "torch.Tensor",
    "torch.nn.parameter.Parameter",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    "torch.strided",
    "torch.sparse_coo",
    "torch.per_tensor_affine",
}
_TORCH_DTYPES = {
    f"torch.{n}"
    for n in [
        "float16",
        "float32",
        "float64",
        "bfloat16",
        "half",
        "float",
        "double",
        "complex32",
        "complex64",
        "complex128",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "bool",
        "qint8",
        "quint8",
        "qint32",
        "float8_e4m3fn",
        "float8_e5m2",
    ]
}
_TORCH_STORAGES = {
    f"torch.{n}Storage"
    for n in [
        "Float",
        "Double",
        "Half",
        "BFloat16",
        "Byte",
        "Char",
        "Short",
        "Int",
        "Long",
        "Bool",
        "ComplexFloat",
        "ComplexDouble",
        "QInt8",
        "QUInt8",
        "QInt32",
        "Untyped",
    ]
}
_JOBLIB = {
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "joblib.numpy_pickle.NDArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
}
_PANDAS = {
    "pandas._libs.internals._unpickle_block",
    "pandas.core.internals.blocks.new_block",
    "pandas.core.indexes.base._new_Index",
    "pandas._libs.tslibs.timestamps._unpickle_timestamp",
    "pandas._libs.tslibs.timedeltas._timedelta_unpickle",
    "pandas._libs.tslibs.nattype.__nat_unpickle",
    "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
    "pandas.core.arrays.categorical.Categorical",
}

#: Exact ``module.name`` globals allowed, by profile.
PROFILES: dict[str, frozenset[str]] = {
    "builtins": frozenset(_BUILTINS | _STDLIB),
    "numpy": frozenset(_NUMPY),
    "torch": frozenset(_TORCH_REBUILD | _TORCH_DTYPES | _TORCH_STORAGES),
    "joblib": frozenset(_JOBLIB),
    "pandas": frozenset(_PANDAS),
}
_ALLOWED = frozenset().union(*PROFILES.values())

#: Module prefixes whose *classes* (CamelCase names) are allowed: data containers
#: and estimators whose state is restored by BUILD, not by calling code.
_CLASS_PACKAGES = ("sklearn", "pandas", "numpy", "scipy.sparse")
_CLASS_NAME = re.compile(r"_?[A-Z][A-Za-z0-9]*\Z")
#: Within those prefixes, modules that run code or touch the system.
_CLASS_PREFIX_EXCEPTIONS = ("sklearn.utils._testing", "pandas.io.", "numpy.f2py", "numpy.distutils")

#: Why a global is dangerous: the first matching prefix ranks it CRITICAL.
_DANGEROUS: dict[str, str] = {
    "os": "runs commands or touches the file system",
    "posix": "runs commands or touches the file system",
    "nt": "runs commands or touches the file system",
    "subprocess": "runs commands",
    "_posixsubprocess": "runs commands",
    "pty": "spawns a shell",
    "sys": "alters the interpreter",
    "builtins.eval": "evaluates code",
    "builtins.exec": "executes code",
    "builtins.compile": "compiles code",
    "builtins.__import__": "imports arbitrary modules",
    "builtins.open": "opens files",
    "builtins.getattr": "reaches arbitrary attributes (gadget chains)",
    "builtins.setattr": "alters arbitrary objects",
    "builtins.globals": "exposes the interpreter",
    "builtins.breakpoint": "starts a debugger",
    "builtins.input": "reads the terminal",
    "builtins.apply": "calls arbitrary functions",
    "importlib": "imports arbitrary modules",
    "pkgutil": "resolves arbitrary names",
    "pydoc": "resolves arbitrary names",
    "runpy": "runs modules",
    "code": "executes code",
    "codeop": "compiles code",
    "marshal": "loads code objects",
    "types": "builds code or functions",
    "ctypes": "calls native code",
    "_ctypes": "calls native code",
    "pickle": "loads nested pickles",
    "_pickle": "loads nested pickles",
    "dill": "loads code",
    "cloudpickle": "loads code",
    "shutil": "touches the file system",
    "tempfile": "touches the file system",
    "socket": "opens network connections",
    "http": "opens network connections",
    "urllib": "opens network connections",
    "requests": "opens network connections",
    "webbrowser": "opens programs",
    "asyncio": "spawns processes",
    "multiprocessing": "spawns processes",
    "threading": "starts threads",
    "operator.attrgetter": "reaches arbitrary attributes (gadget chains)",
    "operator.methodcaller": "calls arbitrary methods (gadget chains)",
    "operator.call": "calls arbitrary functions",
    "_operator": "reaches arbitrary attributes (gadget chains)",
    "functools.partial": "binds arbitrary calls",
    "pip": "installs packages",
    "setuptools": "runs build code",
    "distutils": "runs build code",
    "logging.FileHandler": "writes files",
    "_io": "opens files",
    "io": "opens files",
    "profile": "executes code",
    "cProfile": "executes code",
    "trace": "executes code",
    "timeit": "executes code",
    "idlelib": "executes code",
    "lib2to3": "runs code",
    "imaplib": "opens network connections",
    "smtplib": "opens network connections",
    "ftplib": "opens network connections",
    "uuid": "runs commands on some platforms",
    "_osx_support": "runs commands",
    "_aix_support": "runs commands",
    "_pyrepl": "executes code",
    "site": "alters the interpreter",
    "atexit": "registers code to run",
    "signal": "alters the process",
    "mailcap": "runs commands",
    "pipes": "runs commands",
    "torch.load": "loads nested checkpoints",
    "torch.jit": "loads TorchScript code",
    "torch.hub": "downloads and runs code",
    "torch.storage._load_from_bytes": "loads nested checkpoints",
    "numpy.load": "loads nested pickles",
    "numpy.f2py": "compiles and runs code",
    "joblib.load": "loads nested pickles",
    "_interpreters": "executes code",
    "_xxsubinterpreters": "executes code",
    "bdb": "executes code",
    "pdb": "executes code",
    "doctest": "executes code",
    "ensurepip": "runs pip with code it formats from its arguments",
    "venv": "runs commands",
    "typing._eval_type": "evaluates code (string annotations)",
    "typing.get_type_hints": "evaluates code (string annotations)",
    "dataclasses._create_fn": "executes code",
    "builtins.vars": "exposes a module's namespace (gadget chains)",
    "copyreg.add_extension": "maps extension codes to any global",
    "inspect.getattr_static": "reaches arbitrary attributes (gadget chains)",
    "functools.reduce": "calls arbitrary functions (gadget chains)",
    "operator.itemgetter": "reads arbitrary items (gadget chains)",
    "numpy.testing": "executes code",
    "pandas.read_pickle": "loads nested pickles",
    "pandas.io.pickle": "loads nested pickles",
    "mlflow.projects": "runs project entry points",
    "torch.serialization.load": "loads nested checkpoints",
    "torch.serialization._load": "loads nested checkpoints",
    "torch.package": "imports code from a package archive",
    "torch.utils.collect_env": "runs commands",
    "torch.utils.bottleneck": "executes code",
    "torch.utils._config_module": "loads nested pickles",
    "torch.utils.data.datapipes.utils.decoder": "loads nested pickles",
    "torch._dynamo": "evaluates code",
    "torch._inductor": "compiles and runs code",
    "torch.fx.experimental.symbolic_shapes": "evaluates code",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    dangerous: bool
    reason: str


def _prefixes(qualified: str) -> Iterable[str]:
    parts = qualified.split(".")
    return (".".join(parts[:i]) for i in range(len(parts), 0, -1))


def judge_global(module: str, name: str) -> Verdict:
    """Whether ``module.name`` may be imported by a model pickle, and why not."""
    qualified = f"{module}.{name}"
    for prefix in _prefixes(qualified):
        if prefix in _DANGEROUS:
            return Verdict(False, True, _DANGEROUS[prefix])
    if qualified in _ALLOWED:
        return Verdict(True, False, "")
    if (
        "." not in name
        and _CLASS_NAME.match(name)
        and any(module == p or module.startswith(p + ".") for p in _CLASS_PACKAGES)
        and not module.startswith(_CLASS_PREFIX_EXCEPTIONS)
    ):
        return Verdict(True, False, "")
    return Verdict(False, False, "it is not in any allowlist profile")
