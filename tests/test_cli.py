"""The command line: version, help, `rtseg models`, one-line errors."""
import json
import subprocess
import sys

import pytest

from rtseg import __version__
from rtseg.cli import main
from rtseg.models import available


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "rtseg", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "models" in out.stdout


def test_models_json_lists_every_architecture(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == available()
    for r in rows:
        assert set(r) == {"name", "params", "gflops_360x480", "gflops_1024x2048", "weights"}
        assert r["params"] > 0 and r["gflops_360x480"] > 0
        # 2048*1024 has 12.1x the pixels of 480*360; every model here is fully convolutional.
        assert 8 < r["gflops_1024x2048"] / r["gflops_360x480"] < 16


def test_models_table(capsys):
    assert main(["models", "enet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("enet")


def test_unknown_model_is_one_line_error():
    out = subprocess.run([sys.executable, "-m", "rtseg", "models", "enett"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Did you mean 'enet'" in out.stderr
    assert "Traceback" not in out.stderr


def test_valid_model_names_of_an_unknown_model_all_run(capsys, tmp_path):
    from rtseg.backends import open_backend
    from rtseg.config import list_configs
    from rtseg.pipeline.sources import open_source

    code = main(["run", "--quiet", "--source", "/nonexistent.mp4", "--model", "nonexistent"])
    assert code == 2 and "source not found" in capsys.readouterr().err  # the source is checked first
    frame = tmp_path / "f.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(frame), np.zeros((36, 48, 3), np.uint8))
    code = main(["run", "--quiet", "--source", str(frame), "--model", "nonexistent"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "unknown model 'nonexistent'" in err
    valid = err.split("Valid: ", 1)[1].split(", ")
    assert valid and set(valid) <= set(list_configs("models"))
    image = open_source(str(frame)).read(None).image
    for name in valid:  # every name offered runs as given
        backend = open_backend(name, runtime="torch")
        assert backend.infer(backend.preprocess(image[..., ::-1].copy(), (36, 48))[None]).shape[-2:] == (36, 48)
    for name in sorted(set(list_configs("models")) - set(valid)):  # the others say why they do not
        code = main(["run", "--quiet", "--source", str(frame), "--model", name])
        err = capsys.readouterr().err
        assert code == 2 and "no trained weights" in err and "unknown" not in err
