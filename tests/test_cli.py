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
