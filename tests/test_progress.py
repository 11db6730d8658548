"""Progress bars draw on a terminal and stay silent in logs (CI, files, pipes)."""

from __future__ import annotations

import io

from coreba.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_when_output_is_not_a_terminal():
    log = io.StringIO()
    assert list(progress_bar(range(50), file=log)) == list(range(50))
    assert log.getvalue() == ""


def test_a_bar_on_a_terminal_and_none_when_disabled():
    term = _Terminal()
    list(progress_bar(range(5), file=term, desc="work"))
    assert "work" in term.getvalue() and "5/5" in term.getvalue()
    quiet = _Terminal()
    list(progress_bar(range(5), enabled=False, file=quiet))
    assert quiet.getvalue() == ""
