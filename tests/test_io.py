"""rtseg.io: outputs appear whole or not at all, and an unwritable one fails early in one line."""
import pytest

from rtseg.errors import RtsegError
from rtseg.io import OutputError, atomic_output, atomic_write_text, check_writable, temp_path


def test_temporary_names_are_hidden_per_process_and_keep_the_suffix(tmp_path):
    tmp = temp_path(tmp_path / "model.xml")
    assert tmp.parent == tmp_path and tmp.name.startswith(".model.incomplete.") and tmp.suffix == ".xml"
    assert temp_path(tmp_path / "o.mp4", unique=False).name == ".o.incomplete.mp4"


def test_companion_files_are_renamed_with_the_main_file(tmp_path):
    with atomic_output(tmp_path / "ir" / "m.xml", also=(".bin",)) as tmp:
        tmp.write_text("graph")
        tmp.with_suffix(".bin").write_text("weights")
    assert sorted(p.name for p in (tmp_path / "ir").iterdir()) == ["m.bin", "m.xml"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old")
    with pytest.raises(ValueError):
        with atomic_output(path) as tmp:
            tmp.write_text("half of the new one")
            raise ValueError("the writer failed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_an_output_under_a_file_is_one_error_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot create output folder") as e:
        check_writable(tmp_path / "file" / "out.json")
    assert isinstance(e.value, RtsegError) and "\n" not in str(e.value)
    with pytest.raises(OutputError, match="cannot"):
        atomic_write_text(tmp_path / "file" / "out.json", "{}")
