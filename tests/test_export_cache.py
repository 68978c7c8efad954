"""The export cache belongs to the user: one folder whatever the working directory, shared safely
by concurrent runs."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtseg.export.cache import engines_dir


def test_cache_folder_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("RTSEG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert engines_dir() == tmp_path / "xdg" / "rtseg" / "engines"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert engines_dir() == Path.home() / ".cache" / "rtseg" / "engines"
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "mine"))
    assert engines_dir() == tmp_path / "mine"
    assert engines_dir(str(tmp_path / "flag")) == tmp_path / "flag"  # --engines wins over both


@pytest.mark.slow
def test_concurrent_exports_from_two_folders_build_once_and_share_it(tmp_path):
    pytest.importorskip("onnxruntime")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("RTSEG_CACHE")  # the platform default: the same folder from any working directory
    procs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        procs.append(subprocess.Popen([sys.executable, "-m", "rtseg", "export", "--model", "enet_camvid",
                                       "--format", "onnx", "--size", "96x128"],
                                      cwd=tmp_path / name, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    paths = {Path(out.strip().splitlines()[-1]) for out, _ in results}
    cache = tmp_path / "xdg" / "rtseg" / "engines"
    assert len(paths) == 1 and next(iter(paths)).parent == cache
    logs = "".join(err for _, err in results)
    # The second waited for the first and reused its file instead of writing over it.
    assert logs.count("exporting enet_camvid to ONNX") == 1 and logs.count("cache hit") == 1
    assert not os.listdir(tmp_path / "a") and not os.listdir(tmp_path / "b")
    assert not [n for n in os.listdir(cache) if n.startswith(".") and not n.endswith(".lock")]
    from rtseg.backends import open_backend

    assert open_backend(str(next(iter(paths)))).meta.name == "enet_camvid"
