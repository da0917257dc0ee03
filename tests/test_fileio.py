"""helpers.fileio: an exception in one line."""

from helpers.fileio import first_line


def test_first_line_names_the_type_once_and_stands_in_for_an_empty_message():
    err = RuntimeError("cannot open\nsecond line\nFaiss's own reason")
    assert first_line(err) == "cannot open" and first_line(err, last=True) == "Faiss's own reason"
    assert first_line(err, typed=True) == "RuntimeError: cannot open"
    assert first_line(RuntimeError()) == "RuntimeError" == first_line(RuntimeError(), typed=True)
