"""An MLServer inference runtime that serves one ONNX file with ONNX Runtime.

MLServer ships no ONNX runtime, so tests load this module into MLServer (model-settings.json
``"implementation": "runtime.OnnxRuntimeModel"``, with this folder on MLServer's path) to
serve the same ONNX models as Bastion. It runs inside MLServer's own virtual environment
(``.venv-mlserver``), never in the project's: it imports only MLServer, numpy and
onnxruntime.

Inputs are decoded as the request declares them (flat or nested JSON data, reshaped to the
request's shape); outputs are sent with ONNX Runtime's exact shapes and flat ``data``, so a
1-D output stays 1-D (MLServer's NumPy codec would add a trailing dimension).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime
from mlserver import MLModel
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri

__all__ = ["OnnxRuntimeModel"]

_NUMPY_BY_DATATYPE: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_DATATYPE_BY_KIND: dict[str, str] = {
    np.dtype(code).str: datatype for datatype, code in _NUMPY_BY_DATATYPE.items()
}


class OnnxRuntimeModel(MLModel):
    """Serves the ONNX file named by the model settings' ``parameters.uri``."""

    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._output_names = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds: dict[str, np.ndarray[Any, Any]] = {}
        for request_input in payload.inputs:
            datatype = str(getattr(request_input.datatype, "value", request_input.datatype))
            dtype = _NUMPY_BY_DATATYPE.get(datatype)
            if dtype is None:
                raise InferenceError(f"datatype {datatype} is not served")
            data = np.asarray(request_input.data.root, dtype=dtype)
            if data.size != int(np.prod(request_input.shape)):
                raise InferenceError(
                    f"input {request_input.name}: shape {request_input.shape} does not match "
                    f"its {data.size} values"
                )
            feeds[request_input.name] = data.reshape(request_input.shape)
        wanted = [output.name for output in payload.outputs or []] or self._output_names
        results = self._session.run(wanted, feeds)
        outputs = [
            ResponseOutput(
                name=name,
                shape=list(result.shape),
                datatype=_DATATYPE_BY_KIND[result.dtype.str],
                data=result.reshape(-1).tolist(),
            )
            for name, result in zip(wanted, results, strict=True)
        ]
        return InferenceResponse(
            model_name=self.name, model_version=self.version, id=payload.id, outputs=outputs
        )
