"""What goes wrong, said in one line: every error this project raises on purpose derives from
:class:`CifarlabError`, whose message says what was wrong and what to do; the command line prints that
line and exits with its ``exit_code`` (docs/cli.md), a notebook shows it as the same one line
(:func:`short_errors`). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class CifarlabError(Exception):
    """An error with a message a user can act on. ``student_error``: an exception raised by the student's
    own code (their net), shown with its traceback - their frames only - above the one line."""

    exit_code = 2
    student_error: BaseException | None = None


def student_traceback(e: CifarlabError) -> list[str]:
    """The lines shown above the one line: the student's own frames, where their code raised."""
    import traceback
    return traceback.format_exception(e.student_error) if e.student_error is not None else []


def short_errors() -> None:
    """In IPython/Jupyter: show :class:`CifarlabError` as its one-line message, not a traceback.

    The cell still fails (papermill still stops the suite); only the noise goes."""
    from IPython import get_ipython  # a dependency (ipykernel, ipywidgets)
    shell = get_ipython()
    if shell is None:
        return

    def handler(self, etype, value, tb, tb_offset=None):  # IPython passes tb_offset by name
        del tb, tb_offset  # the point: no traceback
        lines = student_traceback(value) + [f"{etype.__name__}: {value}"]
        self._showtraceback(etype, value, lines)
        return lines

    shell.set_custom_exc((CifarlabError,), handler)
