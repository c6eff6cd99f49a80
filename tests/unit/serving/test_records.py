"""Inference records: batched writing, daily files, drops, reading back (issue 6, point 8)."""

from __future__ import annotations

import json
import logging
import stat
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bastion.errors import InputError, InternalError, PathNotFoundError, UsageError
from bastion.serving._record_summary import summarise_outputs
from bastion.serving._records import InferenceRecord, InferenceRecorder
from bastion.serving._records_reader import read_records

NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2025, 3, 15, tzinfo=UTC).timestamp()
LOGGER = "bastion.serving._records"


def make(when: float = NOON, **changes: object) -> InferenceRecord:
    record = InferenceRecord(
        time=when,
        request_id="req-1",
        principal="key:ab12",
        deployment="iris",
        version="3",
        input_digest="sha256:" + "0" * 64,
        status=200,
        outcome="ok",
        latency_ms=0.42,
        output={"label": {"datatype": "INT64", "shape": [1], "values": [2]}},
    )
    return replace(record, **changes)  # type: ignore[arg-type]


class FakeClock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "records"


@pytest.fixture
def recorder(folder: Path) -> Iterator[InferenceRecorder]:
    recorder = InferenceRecorder(folder, clock=FakeClock())
    yield recorder
    recorder.close()


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- what a record holds -------------------------------------------------------------------------


def test_a_flushed_record_reads_back_with_every_field(
    recorder: InferenceRecorder, folder: Path
) -> None:
    recorder.record(make(arm="candidate"))
    recorder.flush()
    assert recorder.directory == folder
    assert list(read_records(recorder.directory)) == [
        {
            "type": "bastion.inference",
            "format": 1,
            "time": "2025-03-14T12:00:00.000000Z",
            "ts": NOON,
            "request_id": "req-1",
            "principal": "key:ab12",
            "deployment": "iris",
            "version": "3",
            "arm": "candidate",
            "input_digest": "sha256:" + "0" * 64,
            "status": 200,
            "outcome": "ok",
            "latency_ms": 0.42,
            "output": {"label": {"datatype": "INT64", "shape": [1], "values": [2]}},
        }
    ]


def test_a_refusal_is_recorded_without_version_or_output(
    recorder: InferenceRecorder, folder: Path
) -> None:
    recorder.record(make(version="", status=403, outcome="forbidden", output=None))
    recorder.flush()
    (item,) = read_records(folder)
    assert (item["version"], item["status"], item["outcome"], item["output"]) == (
        "",
        403,
        "forbidden",
        None,
    )


def test_a_record_that_cannot_be_strict_json_is_counted_lost_not_written(
    recorder: InferenceRecorder, folder: Path
) -> None:
    recorder.record(make(latency_ms=float("nan")))
    recorder.record(make(request_id="req-2"))
    recorder.flush()
    assert [item["request_id"] for item in read_records(folder)] == ["req-2"]
    assert (recorder.written, recorder.dropped) == (1, 1)


# -- batching ------------------------------------------------------------------------------------


def test_record_does_no_io_and_flush_writes_everything_in_one_batch(folder: Path) -> None:
    recorder = InferenceRecorder(folder)
    for index in range(1000):
        recorder.record(make(request_id=f"req-{index}"))
    assert not folder.exists()  # nothing touched the disk on the caller's thread
    recorder.flush()
    assert (recorder.written, recorder.batches) == (1000, 1)
    (path,) = folder.iterdir()
    assert [item["request_id"] for item in lines_of(path)] == [f"req-{i}" for i in range(1000)]
    recorder.flush()  # nothing pending: no write
    assert recorder.batches == 1
    recorder.close()


def test_a_flush_writes_at_most_max_batch_records_per_write(folder: Path) -> None:
    recorder = InferenceRecorder(folder, max_batch=300)
    for index in range(1000):
        recorder.record(make(request_id=str(index)))
    recorder.close()
    assert (recorder.written, recorder.batches) == (1000, 4)
    assert len(list(read_records(folder))) == 1000


def test_the_background_thread_flushes_once_a_batch_is_full(folder: Path) -> None:
    recorder = InferenceRecorder(folder, flush_seconds=3600, max_batch=10)
    recorder.start()
    try:
        for index in range(10):
            recorder.record(make(request_id=str(index)))
        deadline = time.monotonic() + 30
        while recorder.written < 10 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert recorder.written == 10  # long before flush_seconds
    finally:
        recorder.close()


def test_the_background_thread_flushes_every_flush_seconds(folder: Path) -> None:
    recorder = InferenceRecorder(folder, flush_seconds=0.01)
    recorder.start()
    try:
        recorder.record(make())
        deadline = time.monotonic() + 30
        while recorder.written < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert recorder.written == 1
    finally:
        recorder.close()


def test_close_writes_what_is_pending_and_a_recorder_starts_once(folder: Path) -> None:
    recorder = InferenceRecorder(folder, flush_seconds=3600)
    recorder.start()
    with pytest.raises(UsageError, match="already started"):
        recorder.start()
    recorder.record(make())
    recorder.close()
    assert recorder.written == 1
    with pytest.raises(UsageError):
        recorder.start()


@pytest.mark.parametrize("options", [{"flush_seconds": 0}, {"max_batch": 0}, {"max_pending": 0}])
def test_sizes_and_intervals_must_be_positive(folder: Path, options: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        InferenceRecorder(folder, **options)  # type: ignore[arg-type]


# -- files ---------------------------------------------------------------------------------------


def test_records_go_to_the_file_of_their_utc_day(recorder: InferenceRecorder, folder: Path) -> None:
    recorder.record(make(MIDNIGHT - 0.5, request_id="before"))
    recorder.record(make(MIDNIGHT + 0.5, request_id="after"))
    recorder.flush()
    recorder.record(make(MIDNIGHT - 1, request_id="late"))  # flushed after midnight
    recorder.flush()
    assert sorted(p.name for p in folder.iterdir()) == [
        "records-2025-03-14.jsonl",
        "records-2025-03-15.jsonl",
    ]
    first = lines_of(folder / "records-2025-03-14.jsonl")
    assert [item["request_id"] for item in first] == ["before", "late"]
    assert [item["request_id"] for item in read_records(folder)] == ["before", "late", "after"]
    assert first[0]["time"] == "2025-03-14T23:59:59.500000Z"


def test_the_folder_is_private_and_so_are_the_files(folder: Path) -> None:
    recorder = InferenceRecorder(folder / "deeper")
    recorder.start()
    recorder.record(make())
    recorder.close()
    assert stat.S_IMODE((folder / "deeper").stat().st_mode) == 0o700
    (path,) = (folder / "deeper").iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_folder_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InternalError, match="check that the folder exists"):
        InferenceRecorder(blocker).start()
    recorder = InferenceRecorder(blocker / "records")
    recorder.record(make())
    with pytest.raises(InternalError, match="inference records"):
        recorder.flush()
    assert (recorder.dropped, recorder.written) == (1, 0)


def test_a_file_removed_while_open_is_created_again(
    recorder: InferenceRecorder, folder: Path
) -> None:
    recorder.record(make(request_id="one"))
    recorder.flush()
    (path,) = folder.iterdir()
    path.unlink()
    recorder.record(make(request_id="two"))
    recorder.flush()
    assert [item["request_id"] for item in read_records(folder)] == ["two"]


def test_appending_after_a_crash_cuts_off_the_torn_record_first(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = InferenceRecorder(folder)
    first.record(make(request_id="whole"))
    first.close()
    (path,) = folder.iterdir()
    with path.open("ab") as handle:
        handle.write(b'{"type":"bastion.inference","format":1,"ts":17')  # the crash
    second = InferenceRecorder(folder)
    second.record(make(request_id="next"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        second.close()
    assert "torn by a crash" in caplog.text
    assert [item["request_id"] for item in read_records(folder)] == ["whole", "next"]


# -- dropping ------------------------------------------------------------------------------------


def test_over_max_pending_the_oldest_are_dropped_counted_and_warned_about_once_a_minute(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    recorder = InferenceRecorder(folder, max_pending=5, clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for index in range(8):
            recorder.record(make(request_id=str(index)))
        assert len(caplog.records) == 1
        clock.now += 61
        recorder.record(make(request_id="8"))
    assert len(caplog.records) == 2
    assert "4 inference records dropped" in caplog.records[1].getMessage()
    assert recorder.dropped == 4
    recorder.close()
    assert [item["request_id"] for item in read_records(folder)] == ["4", "5", "6", "7", "8"]


# -- reading -------------------------------------------------------------------------------------


def write_day(folder: Path, day: str, records: list[InferenceRecord]) -> None:
    recorder = InferenceRecorder(folder)
    for record in records:
        recorder.record(record)
    recorder.close()
    assert (folder / f"records-{day}.jsonl").exists()


def test_filters_by_time_and_deployment_and_skip_files_outside_the_range(folder: Path) -> None:
    write_day(folder, "2025-03-14", [make(NOON + i, request_id=f"a{i}") for i in range(4)])
    write_day(folder, "2025-03-15", [make(MIDNIGHT + 1, deployment="mnist", request_id="b")])
    (folder / "records-2025-03-10.jsonl").write_bytes(b"garbage\n")  # never opened below
    (folder / "notes.txt").write_text("not a records file")
    selected = read_records(folder, since=NOON + 1, until=NOON + 3)
    assert [item["request_id"] for item in selected] == ["a1", "a2"]
    with pytest.raises(InputError, match=r"records-2025-03-10\.jsonl line 1 is not JSON"):
        list(read_records(folder, deployment="mnist"))  # no range: the bad day is read
    mnist = read_records(folder, since=NOON, deployment="mnist")
    assert [item["request_id"] for item in mnist] == ["b"]
    assert list(read_records(folder, since=MIDNIGHT + 2)) == []


def test_a_torn_last_line_is_skipped_with_a_warning(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_day(folder, "2025-03-14", [make(request_id="whole")])
    path = folder / "records-2025-03-14.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"type":"bastion.inference","for')
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [item["request_id"] for item in read_records(folder)] == ["whole"]
    assert "line 2: skipped a torn last line" in caplog.text


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b"[1, 2]", "not a JSON object of type 'bastion.inference'"),
        (b'{"type": "something.else", "format": 1, "ts": 1}', "not a JSON object of type"),
        (b'{"type": "bastion.inference", "format": 2, "ts": 1}', "record format 2"),
        (b'{"type": "bastion.inference", "format": true, "ts": 1}', "record format True"),
        (b'{"type": "bastion.inference", "format": 1, "ts": "x"}', "no valid 'ts'"),
        (b'{"type": "bastion.inference", "format": 1, "ts": NaN}', "no valid 'ts'"),
        (b"not json at all", "is not JSON"),
    ],
)
def test_a_bad_line_is_refused_naming_the_file_and_line(
    folder: Path, line: bytes, complaint: str
) -> None:
    write_day(folder, "2025-03-14", [make()])
    path = folder / "records-2025-03-14.jsonl"
    with path.open("ab") as handle:
        handle.write(line + b"\n")
    with pytest.raises(InputError, match=complaint) as caught:
        list(read_records(folder))
    assert f"{path} line 2" in caught.value.message


def test_an_overlong_line_is_refused(folder: Path) -> None:
    folder.mkdir()
    (folder / "records-2025-03-14.jsonl").write_bytes(b"x" * (2 << 20))
    with pytest.raises(InputError, match="line 1 is over"):
        list(read_records(folder))


def test_a_missing_folder_is_path_not_found(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match="no inference records folder"):
        read_records(tmp_path / "nowhere")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=400))
def test_any_bytes_in_a_records_file_raise_at_most_input_error(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "records-2025-03-14.jsonl"
    path.write_bytes(content)
    try:
        for item in read_records(tmp_path):
            assert item["type"] == "bastion.inference"
    except InputError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    items=st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["bastion.inference", "x"]), "format": json_values},
            optional={"ts": json_values, "deployment": json_values},
        ),
        max_size=4,
    ),
    since=st.none() | st.floats(allow_nan=False),
    deployment=st.none() | st.text(max_size=3),
)
def test_near_records_raise_at_most_input_error(
    tmp_path: Path, items: list[object], since: float | None, deployment: str | None
) -> None:
    lines = b"".join(json.dumps(item).encode() + b"\n" for item in items)
    (tmp_path / "records-2025-03-14.jsonl").write_bytes(lines)
    try:
        for item in read_records(tmp_path, since=since, deployment=deployment):
            assert item["format"] == 1
    except InputError:
        pass


# -- output summaries ----------------------------------------------------------------------------


def test_integer_and_bool_outputs_show_their_first_values() -> None:
    summary = summarise_outputs(
        {
            "label": np.arange(20, dtype=np.int64).reshape(10, 2),
            "big": np.array([2**64 - 1], dtype=np.uint64),
            "flag": np.array([True, False]),
            "small": np.array([[1]], dtype=np.uint8),
        }
    )
    assert summary == {
        "label": {"datatype": "INT64", "shape": [10, 2], "values": [0, 1, 2, 3, 4, 5, 6, 7]},
        "big": {"datatype": "UINT64", "shape": [1], "values": [2**64 - 1]},
        "flag": {"datatype": "BOOL", "shape": [2], "values": [True, False]},
        "small": {"datatype": "UINT8", "shape": [1, 1], "values": [1]},
    }


def test_float_outputs_show_min_max_and_the_argmax_of_the_first_rows() -> None:
    scores = np.zeros((20, 3), dtype=np.float32)
    scores[np.arange(20), np.arange(20) % 3] = 1.0
    scores[0, 0] = -2.5
    scores[0, 1] = 4.0
    summary = summarise_outputs({"scores": scores, "half": np.array([[0.5, 0.25]], np.float16)})
    assert summary["scores"] == {
        "datatype": "FP32",
        "shape": [20, 3],
        "min": -2.5,
        "max": 4.0,
        "argmax": [1, 1, 2, 0, 1, 2, 0, 1],
    }
    assert summary["half"] == {
        "datatype": "FP16",
        "shape": [1, 2],
        "min": 0.25,
        "max": 0.5,
        "argmax": [0],
    }


def test_float_vectors_show_values_and_non_finite_numbers_stay_strict_json() -> None:
    summary = summarise_outputs(
        {"value": np.array([1.5, np.inf, np.nan], dtype=np.float64), "scalar": np.array(2.0)}
    )
    assert summary["value"] == {
        "datatype": "FP64",
        "shape": [3],
        "min": "nan",
        "max": "nan",
        "values": [1.5, "inf", "nan"],
    }
    assert summary["scalar"] == {
        "datatype": "FP64",
        "shape": [],
        "min": 2.0,
        "max": 2.0,
        "values": [2.0],
    }
    json.dumps(summary, allow_nan=False)


def test_bytes_outputs_are_decoded_with_replacement_and_cut_short() -> None:
    text = np.array([b"cat", "é".encode() * 100, b"\xff\xfe", "dog"], dtype=object)
    summary = summarise_outputs({"text": text, "fixed": np.array([b"ab", b"c"])})
    values = summary["text"]["values"]  # type: ignore[index]
    assert values[0] == "cat"
    assert values[1] == "é" * 64
    assert values[2] == "\ufffd\ufffd"
    assert values[3] == "dog"
    assert summary["fixed"] == {"datatype": "BYTES", "shape": [2], "values": ["ab", "c"]}


def test_empty_outputs_and_odd_dtypes_are_described_without_values() -> None:
    summary = summarise_outputs({"none": np.zeros((0, 4), np.float32), "complex": np.array([1j])})
    assert summary["none"] == {"datatype": "FP32", "shape": [0, 4]}
    assert summary["complex"] == {"datatype": "complex128", "shape": [1]}


def test_a_summary_is_bounded_whatever_the_outputs() -> None:
    huge = np.ones((10_000, 100), np.float32)
    outputs = {f"out{i}": huge for i in range(40)}
    summary = summarise_outputs(outputs)
    assert len(summary) == 16
    assert len(json.dumps(summary)) < 4000


def as_json_number(value: float) -> float | str:
    return float(value) if np.isfinite(value) else str(float(value))


@settings(max_examples=200, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
    )
)
def test_float_summaries_agree_with_numpy_for_any_shape(array: np.ndarray) -> None:
    summary = summarise_outputs({"x": array})["x"]
    assert isinstance(summary, dict)
    if array.size == 0:
        assert summary == {"datatype": summary["datatype"], "shape": list(array.shape)}
        return
    assert summary["min"] == as_json_number(array.min())
    assert summary["max"] == as_json_number(array.max())
    if array.ndim >= 2:
        rows = array[:8]
        assert summary["argmax"] == rows.reshape(len(rows), -1).argmax(axis=1).tolist()
    else:
        assert summary["values"] == [as_json_number(v) for v in array.reshape(-1)[:8]]
    json.dumps(summary, allow_nan=False)
