"""Serving MaeFuse from NVIDIA Triton Inference Server.

- ``server``: ``maefuse-serve``, a real Triton server (PyTriton's ``tritonserver`` binary) hosting a
  :class:`maefuse_deploy.Fuser` of any backend, with Triton's dynamic batching, HTTP/gRPC, health and metrics.
- ``client``: :class:`RemoteFuser`, the Fuser interface over ``tritonclient`` (``maefuse-fuse --server URL``).
- ``repository``: ``maefuse-export --triton``, a model repository (``config.pbtxt``) that a full Triton server
  loads with its TensorRT or ONNX Runtime backend.
- ``protocol``: the tensor names and types the server and client share.

Nothing here is imported by ``import maefuse_deploy``; PyTriton and tritonclient are optional (the ``serve`` and
``client`` extras, docs/serving.md).
"""
