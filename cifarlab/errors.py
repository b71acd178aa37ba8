"""What goes wrong, said in one line.

Every error this project raises on purpose derives from :class:`CifarlabError`: its message
says what was wrong and what to do, so the command line prints that one line (no traceback)
and exits with ``exit_code`` - 2 for a mistake in what was asked (an option, a path, a
config), 1 for a run that failed (a download, a diverged training, an export that did not
check out). Anything else is a bug and keeps its traceback.

In a notebook, :func:`short_errors` shows these errors as the same one line.
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
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def handler(self, etype, value, tb, tb_offset=None):  # IPython passes tb_offset by name
        del tb, tb_offset  # the point: no traceback
        lines = student_traceback(value) + [f"{etype.__name__}: {value}"]
        self._showtraceback(etype, value, lines)
        return lines

    shell.set_custom_exc((CifarlabError,), handler)
