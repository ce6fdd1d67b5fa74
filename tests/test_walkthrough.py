"""docs/walkthrough.md stays true to the code: the glue it quotes is the code's, word for word,
the files it asks a learner to open are at most six, and its table of files is complete.

The page follows one batch from ``fit`` to the parameter update. It asks the learner to open six
files and quotes what four more do on the path (blocks preceded by ``<!-- quoted from FILE -->``).
A quote that no longer matches its file, or a file the step passes through that the table does
not list, fails here: the page cannot drift from the code without a test saying so.
"""

from __future__ import annotations

import pathlib
import re
import sys
import textwrap

import pytest

import portanet as pn

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "walkthrough.md"
PACKAGE = pathlib.Path(pn.__file__).resolve().parent

QUOTE = re.compile(r"<!-- quoted from (\S+) -->\n```python\n(.*?)\n```", re.S)
ROW = re.compile(r"^\| (.+?) \| .+? \| (open|quoted above|skip) \|$", re.M)


def _quotes() -> list[tuple[str, str]]:
    return QUOTE.findall(PAGE.read_text(encoding="utf-8"))


def _table() -> dict[str, str]:
    """{file under portanet/: "open" | "quoted above" | "skip"} from the page's table."""
    rows = {}
    for files, how in ROW.findall(PAGE.read_text(encoding="utf-8")):
        for name in re.findall(r"`([\w/]+\.py)`", files):
            rows[name] = how
    return rows


def _appears_verbatim(block: str, source: str) -> bool:
    """Whether ``block`` is a run of consecutive lines of ``source``, up to a common indent."""
    want = block.split("\n")
    lines = source.split("\n")
    for i in range(len(lines) - len(want) + 1):
        window = "\n".join(lines[i:i + len(want)])
        if textwrap.dedent(window) == block:
            return True
    return False


def test_the_page_quotes_and_tables_are_found():
    assert len(_quotes()) >= 8
    assert len(_table()) >= 20


@pytest.mark.parametrize("index", range(len(_quotes())))
def test_each_quote_is_the_code_word_for_word(index):
    path, block = _quotes()[index]
    source = (ROOT / path).read_text(encoding="utf-8")
    assert _appears_verbatim(block, source), (
        f"docs/walkthrough.md quotes {path}, but these lines are not in it as quoted:\n{block}"
        "\nCopy the current lines from the file into the page.")


def test_a_learner_opens_at_most_six_files():
    table = _table()
    opened = sorted(name for name, how in table.items() if how == "open")
    assert len(opened) <= 6, opened
    # every file the page leaves closed but the batch's logic runs through is quoted on it
    quoted = {path.removeprefix("portanet/") for path, _ in _quotes()}
    for name, how in table.items():
        if how == "quoted above":
            assert name in quoted, f"{name} is 'quoted above' in the table but never quoted"


def test_the_table_lists_every_file_the_step_passes_through():
    """A profiler on the page's model, one short ``fit`` on NumPy: every portanet file it sees
    is in the table (a refactor that routes the step through a new file must say so there)."""
    with pn.use_backend("numpy"):
        x, y = pn.data.make_spiral(n_samples=64, seed=0)
        model = pn.Sequential([pn.layers.Dense(2, 128, activation="relu"),
                               pn.layers.Dense(128, 3)],
                              loss=pn.losses.SoftmaxCrossEntropy(),
                              optimizer=pn.optimizers.Adam(3e-3), seed=0)
        seen: set[str] = set()

        def profile(frame, event, arg):
            if event == "call":
                name = frame.f_code.co_filename
                if name.startswith(str(PACKAGE)):
                    seen.add(pathlib.Path(name).relative_to(PACKAGE).as_posix())

        previous = sys.getprofile()
        sys.setprofile(profile)
        try:
            model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        finally:
            sys.setprofile(previous)
    table = _table()
    missing = sorted(seen - set(table))
    assert not missing, f"docs/walkthrough.md's table lacks {missing}"
    # and the six opened files are on the path, not files the step never enters
    opened = {name for name, how in table.items() if how != "skip"}
    assert opened <= seen, sorted(opened - seen)
