"""The inference gateway's building blocks (issue 6, in progress).

A services-layer package: the Open Inference Protocol (KServe v2) request and response
codec with validation against a model's declared inputs, and output hardening. The
gateway's routes, workers and routing are not built yet.
"""
