"""Progress output: live tqdm bars on a terminal, a few plain lines (no carriage returns) elsewhere."""

import io

from cryorestore.progress import QuietProgress, is_live, progress_bar


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_file_output_is_plain_lines_at_the_interval_and_at_the_end():
    out = io.StringIO()
    bar = progress_bar(range(1000), desc="epoch 1", unit="batch", stream=out, interval=None)
    assert isinstance(bar, QuietProgress)
    assert list(bar) == list(range(1000))
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") == 1 and text.startswith("epoch 1: 1000/1000 batch")
    out = io.StringIO()
    bar = progress_bar(range(5), desc="x", stream=out, interval=0.0, leave=False)
    for _ in bar:
        bar.set_postfix(loss="0.5")
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("x: 5/5 it") and lines[-1].endswith("[loss=0.5]")
    out = io.StringIO()
    assert list(progress_bar(iter([1, 2]), stream=out, enabled=False)) == [1, 2] and out.getvalue() == ""


def test_terminal_gets_a_tqdm_bar():
    from tqdm.auto import tqdm

    tty = _Tty()
    assert is_live(True, tty) and not is_live(False, tty) and not is_live(True, io.StringIO())
    bar = progress_bar(range(3), desc="tiles", stream=tty)
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]
    assert "\r" in tty.getvalue()
