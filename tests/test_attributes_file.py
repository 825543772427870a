import numpy as np
import pytest

from faceedittalker.data.attributes import CELEBA_ATTRIBUTES, read_attribute_file, write_attribute_file
from faceedittalker.errors import InputError


def test_forty_celeba_names_in_standard_order():
    assert len(CELEBA_ATTRIBUTES) == 40 == len(set(CELEBA_ATTRIBUTES))
    assert CELEBA_ATTRIBUTES[0] == "5_o_Clock_Shadow" and CELEBA_ATTRIBUTES[-1] == "Young"
    assert CELEBA_ATTRIBUTES.index("Eyeglasses") == 15 and CELEBA_ATTRIBUTES.index("Smiling") == 31


def test_round_trip_keeps_names_rows_and_order(tmp_path):
    rng = np.random.default_rng(0)
    rows = {f"{i}.png": rng.choice([-1, 1], size=40).astype(np.int8) for i in range(5)}
    rows["bools.png"] = np.arange(40) % 3 == 0
    path = tmp_path / "anno.txt"
    write_attribute_file(path, CELEBA_ATTRIBUTES, rows)
    lines = path.read_text().splitlines()
    assert lines[0] == "6" and lines[1].split() == list(CELEBA_ATTRIBUTES)
    names, read = read_attribute_file(path)
    assert names == list(CELEBA_ATTRIBUTES) and list(read) == list(rows)
    for key, values in rows.items():
        expected = np.where(values, 1, -1) if values.dtype == bool else values
        assert read[key].dtype == np.int8 and np.array_equal(read[key], expected)


def test_reads_celebamask_hq_spacing(tmp_path):
    # The real file separates the file name and values with two spaces.
    path = tmp_path / "anno.txt"
    path.write_text("1\n" + " ".join(CELEBA_ATTRIBUTES) + "\n0.jpg  " + " ".join(["-1"] * 39 + ["1"]) + "\n")
    names, rows = read_attribute_file(path)
    assert rows["0.jpg"][-1] == 1 and rows["0.jpg"][:-1].sum() == -39


@pytest.mark.parametrize(
    "text",
    [
        "",
        "two\nA B\nx.png 1 1\n",
        "1\nA B\nx.png 1\n",
        "1\nA B\nx.png 1 0\n",
        "2\nA B\nx.png 1 -1\n",
        "2\nA B\nx.png 1 -1\nx.png 1 1\n",
        "1\nA A\nx.png 1 -1\n",
    ],
)
def test_invalid_files_raise_input_error(tmp_path, text):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError):
        read_attribute_file(path)


def test_missing_file_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_attribute_file(tmp_path / "missing.txt")
