"""What of the TensorRT path runs without TensorRT or a GPU: cache keys, shape profiles, the
engine file header and the refusal of foreign engines, inspector parsing, and the one-line
errors when TensorRT or CUDA is missing. The Q/DQ ONNX that TensorRT would consume is tested in
test_export_int8.py."""
import json
import subprocess
import sys

import pytest
import torch

from rtseg.backends import open_backend, runtime_for
from rtseg.backends.tensorrt_backend import (ForeignEngineError, TensorRTBackend, check_compatible,
                                             import_tensorrt, read_engine_header, write_engine)
from rtseg.errors import RtsegError
from rtseg.export.cache import CacheKey, artifact_path, sha256_files
from rtseg.export.tensorrt import layer_precisions, profile_tag, shape_profile

META = {"name": "enet_camvid", "class_names": ["a", "b"], "colors": [[0, 0, 0], [1, 1, 1]],
        "mean": [0.5] * 3, "std": [0.5] * 3, "input_size": [360, 480], "ignore_index": 11,
        "precision": "fp16", "argmax_in_graph": False}
HERE = {"tensorrt": "10.9.0", "gpu": "NVIDIA GeForce RTX 4090", "capability": "8.9"}


def _key(**kw):
    base = dict(kind="engine", source="ab" * 32, precision="fp16", shape="1x3x360x480", calib="",
                runtime="tensorrt 10.9.0", device="NVIDIA GeForce RTX 4090", capability="8.9",
                flags=("hardware_compat=none",))
    return CacheKey(**{**base, **kw})


def _meta():
    from rtseg.backends.base import ModelMeta

    return ModelMeta.from_json(json.dumps(META))


def test_cache_key_changes_with_every_field_and_only_then():
    k = _key()
    assert k.digest() == _key().digest()
    assert _key(flags=("hardware_compat=none",)).digest() == k.digest()
    changes = dict(kind="onnx", source="cd" * 32, precision="int8", shape="1x3x180x240", calib="ef" * 32,
                   runtime="tensorrt 11.4.0", device="NVIDIA A100", capability="8.0", flags=("argmax",))
    digests = {k.digest()} | {_key(**{f: v}).digest() for f, v in changes.items()}
    assert len(digests) == len(changes) + 1
    # Flag order is not part of the identity.
    assert _key(flags=("a", "b")).digest() == _key(flags=("b", "a")).digest()


def test_artifact_name_is_derived_from_the_key(tmp_path):
    k = _key(flags=("argmax",))
    p = artifact_path(tmp_path, "enet_camvid", k, (360, 480), ".engine")
    assert p.parent == tmp_path
    assert p.name == f"enet_camvid_fp16_360x480_argmax_{k.digest()[:12]}.engine"
    assert artifact_path(tmp_path, "enet_camvid", _key(device="NVIDIA A100"), (360, 480), ".engine") != p


def test_calibration_digest_depends_on_frame_bytes(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    d = sha256_files([a, b])
    assert sha256_files([a, b]) == d and sha256_files([b, a]) != d
    b.write_bytes(b"3")
    assert sha256_files([a, b]) != d


def test_static_profile_is_one_shape():
    p = shape_profile((360, 480))
    assert p["min"] == p["opt"] == p["max"] == (1, 3, 360, 480)
    assert profile_tag(p) == "1x3x360x480"


def test_dynamic_profile_spans_half_to_double_in_multiples():
    p = shape_profile((360, 480), dynamic=True)
    assert p["opt"] == (1, 3, 360, 480)
    assert p["min"] == (1, 3, 176, 240) and p["max"] == (1, 3, 720, 960)
    assert all(v % 8 == 0 for v in p["min"][2:] + p["max"][2:])
    assert profile_tag(p) == "1x3x176x240-1x3x360x480-1x3x720x960"
    odd = shape_profile((97, 131), dynamic=True, batch=2)
    assert odd["min"][2] <= 97 <= odd["max"][2] and odd["min"][3] <= 131 <= odd["max"][3]
    assert odd["max"][0] == 2 and odd["min"][0] == 1
    with pytest.raises(RtsegError):
        shape_profile((360, 480), dynamic=True, min_scale=2.0)


def test_layer_precisions_reads_both_inspector_schemas():
    trt10 = {"Layers": [
        {"Name": "conv1", "LayerType": "CaskConvolution",
         "Outputs": [{"Name": "a", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
        {"Name": "conv2", "LayerType": "CaskConvolution",
         "Outputs": [{"Name": "b", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}]},
        {"Name": "reformat", "LayerType": "Reformat",
         "Outputs": [{"Name": "c", "Format/Datatype": "Row major linear FP32"}]},
        {"Name": "head", "LayerType": "Resize", "Outputs": [{"Name": "d", "Format/Datatype": "Row major linear FP32"}]},
    ], "Bindings": ["input", "logits"]}
    assert layer_precisions(json.dumps(trt10)) == {"fp16": 1, "int8": 1, "fp32": 1}
    trt11 = {"Layers": [{"Name": "conv", "LayerType": "CaskConvolution",
                         "Outputs": [{"Name": "a", "DataType": "Half", "Format": "Channel major (kHWC8)"}]}],
             "I/O Tensors": []}
    assert layer_precisions(json.dumps(trt11)) == {"fp16": 1}
    # Without ProfilingVerbosity.DETAILED the layers are bare names: nothing to count.
    assert layer_precisions(json.dumps({"Layers": ["conv1", "conv2"]})) == {}


def test_engine_header_round_trip(tmp_path):
    path = write_engine(tmp_path / "m.engine", {"meta": META, "cache_key": "k", **HERE}, b"\x00PLAN\xff")
    header, offset = read_engine_header(path)
    assert header["meta"] == META and header["gpu"] == HERE["gpu"] and header["cache_key"] == "k"
    assert path.read_bytes()[offset:] == b"\x00PLAN\xff"


def test_foreign_engine_is_refused_with_one_line(tmp_path):
    path = write_engine(tmp_path / "m.engine", {"meta": META, "cache_key": "k", **HERE}, b"plan")
    header, _ = read_engine_header(path)
    check_compatible(header, HERE)  # same machine: fine
    for field, value in (("gpu", "NVIDIA A100-SXM4-80GB"), ("tensorrt", "11.4.0"), ("capability", "8.0")):
        with pytest.raises(ForeignEngineError) as e:
            check_compatible(header, {**HERE, field: value}, str(path))
        msg = str(e.value)
        assert "\n" not in msg and str(header[field]) in msg and value in msg and "rebuild" in msg


def test_non_rtseg_engine_file_is_refused(tmp_path):
    raw = tmp_path / "raw.engine"
    raw.write_bytes(b"\x12\x34 plain TensorRT plan")
    with pytest.raises(RtsegError, match="not an rtseg engine"):
        read_engine_header(raw)
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"RTSEGTRT" + (5).to_bytes(4, "little") + b"{nope")
    with pytest.raises(RtsegError, match="corrupt"):
        read_engine_header(bad)


def test_missing_tensorrt_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now raises ImportError
    with pytest.raises(RtsegError, match=r'pip install "rtseg\[tensorrt\]"'):
        import_tensorrt()


def test_loading_an_engine_without_tensorrt_or_cuda_is_one_clear_error(tmp_path, monkeypatch):
    path = write_engine(tmp_path / "m.engine", {"meta": META, "cache_key": "k", **HERE}, b"plan")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(RtsegError, match="TensorRT is not installed"):
        open_backend(str(path))
    with pytest.raises(RtsegError, match="CUDA device"):
        TensorRTBackend(path, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_no_cuda_messages():
    from rtseg.backends.tensorrt_backend import cuda_device
    from rtseg.backends.torch_backend import TorchBackend

    with pytest.raises(RtsegError, match="TensorRT needs a CUDA GPU"):
        cuda_device()
    with pytest.raises(RtsegError, match="CUDA is not available"):
        TorchBackend(torch.nn.Conv2d(3, 2, 1), _meta(), device="cuda")



def test_torch_backend_refuses_fp16_on_cpu_and_int8():
    from rtseg.backends.torch_backend import TorchBackend

    with pytest.raises(RtsegError, match="fp16 .* needs a CUDA device"):
        TorchBackend(torch.nn.Conv2d(3, 2, 1), _meta(), precision="fp16")
    with pytest.raises(RtsegError, match="rtseg export"):
        TorchBackend(torch.nn.Conv2d(3, 2, 1), _meta(), precision="int8")


def test_torch_backend_channels_last_gives_the_same_logits():
    from rtseg.backends.torch_backend import TorchBackend

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
    x = torch.randn(2, 3, 12, 16).numpy()
    a = TorchBackend(net, _meta(), channels_last=False).infer(x)
    b = TorchBackend(net, _meta(), channels_last=True).infer(x)
    assert torch.allclose(a, b, atol=1e-5)


def test_runtime_is_chosen_by_suffix(tmp_path):
    assert runtime_for("deeplabv3plus_camvid") == "torch"
    assert runtime_for("w.safetensors") == "torch"
    assert runtime_for("m.onnx") == "onnxruntime"
    assert runtime_for("m.xml") == "openvino"
    assert runtime_for("m.engine") == "tensorrt"
    odd = tmp_path / "m.pb"
    odd.write_bytes(b"x")
    with pytest.raises(RtsegError, match="cannot tell the runtime"):
        runtime_for(str(odd))
    with pytest.raises(RtsegError, match="unknown runtime"):
        open_backend("m.onnx", runtime="tflite")


def test_cli_engine_export_without_tensorrt_is_one_line(tmp_path):
    try:
        import_tensorrt()
        torch.cuda.current_device()
        pytest.skip("TensorRT and a GPU are present: this checks the message where they are not")
    except (RtsegError, AssertionError, RuntimeError):
        pass
    out = subprocess.run([sys.executable, "-m", "rtseg", "export", "--model", "enet_camvid", "--format", "engine",
                          "--precision", "fp16", "--out-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0
    assert "TensorRT" in out.stderr
