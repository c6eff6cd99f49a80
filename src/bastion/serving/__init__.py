"""The inference gateway's building blocks (issue 6, in progress).

A services-layer package: the Open Inference Protocol (KServe v2) request and response
codec with validation against a model's declared inputs (``docs/gateway.md``), and output
hardening. The gateway's routes, workers and routing are not built yet.
"""

from bastion.serving._hardening import (
    HardenedOutput,
    NoiseSpec,
    OutputPolicy,
    OutputTiers,
    harden,
)
from bastion.serving._oip import InferLimits, InferRequest, RequestedOutput, parse_infer_request
from bastion.serving._oip_response import encode_infer_response
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec

__all__ = [
    "Datatype",
    "HardenedOutput",
    "InferLimits",
    "InferRequest",
    "ModelSignature",
    "NoiseSpec",
    "OutputPolicy",
    "OutputTiers",
    "RequestedOutput",
    "TensorSpec",
    "encode_infer_response",
    "harden",
    "parse_infer_request",
]
