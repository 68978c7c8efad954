"""Export: ONNX (``onnx.py``), INT8 quantization (``quantize.py``) and its accuracy gate
(``gate.py``), OpenVINO IR (``openvino.py``), TensorRT engines (``tensorrt.py``), the cache keys
that name every artifact (``cache.py``), and ``export()`` tying them together (``api.py``).

Runtimes are optional: each module imports its runtime inside the function that needs it.
"""
from rtseg.export.api import ExportRequest, ExportResult, export

__all__ = ["ExportRequest", "ExportResult", "export"]
