"""Status's fast path through the config file gives the answers pathlib and tomllib gave.

``simple_toml`` (a strict subset of TOML) returns None or exactly ``tomllib.loads``: on
generated documents inside the subset and just outside it, on every TOML text of the
repository (the reference, the docs, the configs the tests write). ``plain``, ``resolved``
and ``readonly.file_uri`` give what pathlib gave.
"""

from __future__ import annotations

import ast
import os
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from dropsync.daemon.cli.init import example_config
from dropsync.daemon.config_file import plain, resolve_path, resolved, simple_toml
from dropsync.store.readonly import file_uri
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.support import ROOT, typed
from tests.test_config_reference import uncommented


def assert_as_tomllib(text: str) -> dict[str, Any] | None:
    """The property: the subset reader's answer is None or tomllib's (which then succeeds)."""
    quick = simple_toml(text)
    if quick is not None:
        assert typed(quick) == typed(tomllib.loads(text)), text
    return quick


# --- generated documents -------------------------------------------------------------------

KEYS = ["a", "b", "path", "store", "x-y", "A_1", "1", "true", "-"]
SPACE = st.sampled_from(["", " ", "  ", "\t"])
TEXT = st.text(
    alphabet=st.sampled_from(list("ab #'\"=[]{}.,\t\\é€\u2028\x7f\x00\x1f\r\n")), max_size=6
)


@st.composite
def number(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["", "", "+", "-"]))
    whole = str(draw(st.integers(min_value=0, max_value=10**20)))
    if draw(st.booleans()) and len(whole) > 1:
        cut = draw(st.integers(min_value=1, max_value=len(whole) - 1))
        whole = f"{whole[:cut]}_{whole[cut:]}"
    fraction = draw(st.sampled_from(["", "", ".5", ".0", ".25", ".1_0", ".05"]))
    return f"{sign}{whole}{fraction}"


# Scalars just outside the subset (or odd inside it), as TOML text.
ODD_SCALARS = [
    "007",
    "0_1",
    "1__0",
    "1_",
    "_1",
    "1.",
    ".5",
    "1e5",
    "1.5E-3",
    "inf",
    "-nan",
    "0x1F",
    "0o17",
    "0b101",
    "1979-05-27",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "True",
    "truee",
    "+",
    "-",
    "--1",
    "1-2",
    "1.2.3",
    '"a\\nb"',
    '"\\u00e9"',
    '"a\\"b"',
    '""""""',
    '"""x"""',
    "'''x'''",
    '"open',
    "'open",
    '"a" "b"',
    "{}",
    "{ a = 1 }",
    '{ users = "user" }',
    "[[1]]",
    "[1, [2]]",
    "[1 2]",
    "[,]",
    "[1,,2]",
    "[1,",
    "",
    "1" * 4400,
]


def scalar() -> st.SearchStrategy[str]:
    return st.one_of(
        TEXT.filter(lambda t: '"' not in t and "\\" not in t).map(lambda t: f'"{t}"'),
        TEXT.filter(lambda t: "'" not in t).map(lambda t: f"'{t}'"),
        TEXT.map(lambda t: f'"{t}"'),
        number(),
        st.sampled_from(["true", "false"]),
        st.sampled_from(ODD_SCALARS),
    )


@st.composite
def value(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 3)):
        return draw(scalar())
    items = draw(st.lists(scalar(), max_size=4))
    comma = draw(st.sampled_from([",", ", ", " ,"]))
    trailing = draw(st.sampled_from(["", "", ","]))
    return f"[{draw(SPACE)}{comma.join(items)}{trailing}{draw(SPACE)}]"


@st.composite
def line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["pair", "pair", "pair", "table", "comment", "blank", "odd"]))
    comment = draw(st.sampled_from(["", "", " # c", "#", " #é", " # \x01"]))
    indent = draw(SPACE)
    if kind == "pair":
        key = draw(st.sampled_from([*KEYS, "a.b", '"a"', "'a'", "a b", "", "é"]))
        return f"{indent}{key}{draw(SPACE)}={draw(SPACE)}{draw(value())}{comment}"
    if kind == "table":
        names = draw(st.lists(st.sampled_from([*KEYS, "", '"q"']), min_size=1, max_size=3))
        dot = draw(st.sampled_from([".", " . ", "."]))
        left, right = draw(st.sampled_from([("[", "]"), ("[", "]"), ("[[", "]]"), ("[", "")]))
        return f"{indent}{left}{draw(SPACE)}{dot.join(names)}{draw(SPACE)}{right}{comment}"
    if kind == "comment":
        return f"{indent}#{draw(TEXT)}"
    if kind == "blank":
        return indent
    return draw(TEXT)


@st.composite
def document(draw: st.DrawFn) -> str:
    lines = draw(st.lists(line(), max_size=8))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    return newline.join(lines) + draw(st.sampled_from(["", "\n", "\r\n", "\r"]))


@settings(max_examples=3000, deadline=None)
@given(document())
@example("")
@example("a = 1\r")
@example("[a.b]\n[a]\n")
@example("[a]\nb = 1\n[a.b]\n")
@example("a = \"x\"#c\n[t] #c\nb=[1,2.5,true,'y',]\n")
def test_the_subset_reader_answers_as_tomllib_or_not_at_all(text: str) -> None:
    assert_as_tomllib(text)


@st.composite
def plain_document(draw: st.DrawFn) -> str:
    """A document inside the subset: no key or table twice, nothing odd."""
    lines: list[str] = []
    tables: list[tuple[str, ...]] = [()]
    for names in draw(st.lists(st.lists(st.sampled_from(KEYS), min_size=1, max_size=2))):
        new = tuple(names)
        if not any(t[: len(new)] == new for t in tables):  # not defined, nor a sub-table of it
            tables.append(new)
    for path in tables:
        if path:
            lines.append(f"[{'.'.join(path)}]")
        taken = {t[len(path)] for t in tables if len(t) > len(path) and t[: len(path)] == path}
        for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3)):
            if key not in taken:
                item = draw(st.one_of(number(), st.sampled_from(["true", '"x y"', "'z'", "[]"])))
                lines.append(f"{key} = {item}{draw(st.sampled_from(['', ' # c']))}")
        lines.append(draw(st.sampled_from(["", "# note"])))
    return "\n".join(lines)


@settings(max_examples=500, deadline=None)
@given(plain_document())
def test_a_plain_document_is_read_without_tomllib(text: str) -> None:
    assert simple_toml(text) is not None, text
    assert_as_tomllib(text)


@settings(max_examples=1000, deadline=None)
@given(plain_document(), st.data())
def test_a_plain_document_with_a_character_more_is_read_as_tomllib_reads_it(
    text: str, data: st.DataObject
) -> None:
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    extra = data.draw(st.sampled_from(list(" \t\r\n#=[]{}.,\"'\\_+-0e.x\x00\x7fé")))
    assert_as_tomllib(text[:at] + extra + text[at:])


# --- every TOML text of the repository -----------------------------------------------------


def docs_toml() -> list[str]:
    """The ```toml blocks of the docs and the README."""
    blocks = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks += re.findall(r"```toml\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    return blocks


def toml_of_the_tests() -> list[str]:
    """String literals of the tests that look like a config (f-strings with each field as
    ``1``)."""
    found = []
    for source in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                parts = node.values
                text = "".join(str(p.value) if isinstance(p, ast.Constant) else "1" for p in parts)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            if re.search(r"^\s*\[[a-z]", text, re.M) and "=" in text:
                found.append(text)
    return found


def test_every_toml_text_of_the_repository_is_read_as_tomllib_reads_it() -> None:
    texts = [example_config(), uncommented(example_config()), *docs_toml(), *toml_of_the_tests()]
    read = [assert_as_tomllib(text) is not None for text in texts]
    assert len(texts) > 100
    valid = [text for text in texts if parses(text)]
    # Nearly all configs are plain: the fast path is the usual one, not a curiosity.
    assert sum(read) >= 0.9 * len(valid)


def parses(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def test_the_config_dropsync_init_writes_is_read_without_tomllib() -> None:
    assert simple_toml(example_config()) == tomllib.loads(example_config())


# --- paths as pathlib made them ------------------------------------------------------------

PATH_TEXT = st.text(alphabet=st.sampled_from(list("/.~ab\\é\udcff ")), max_size=12)


@settings(max_examples=1000, deadline=None)
@given(PATH_TEXT)
@example("")
@example("//")
@example("///a//b/./c/")
@example("./..")
def test_plain_is_what_pathlib_makes_of_a_path(text: str) -> None:
    assert plain(text) == str(PurePosixPath(text))


def pathlib_resolve_path(value: str) -> Path:
    """What ``resolve_path`` was, with pathlib (the oracle)."""
    state = os.environ.get("STATE_DIRECTORY")
    base = Path(state.split(":")[0]) if state else Path.cwd()
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


@settings(max_examples=500, deadline=None)
@given(
    value=PATH_TEXT,
    home=st.sampled_from(["/home/u", "/", "//h", "/h/", "", "rel/h"]),
    state=st.sampled_from([None, "/var/lib/d", "/var/lib/d/:/other", "//s", "", ":x", "rel"]),
)
def test_resolved_is_what_pathlib_made_of_a_config_path(
    value: str, home: str, state: str | None
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", home)
        if state is None:
            patch.delenv("STATE_DIRECTORY", raising=False)
        else:
            patch.setenv("STATE_DIRECTORY", state)
        try:
            expected: str | type[Exception] = str(pathlib_resolve_path(value))
        except RuntimeError:  # ~user of nobody: pathlib cannot find the home directory
            expected = RuntimeError
        if expected is RuntimeError:  # here a ValueError, which the config names the key of
            with pytest.raises(ValueError, match="no such user"):
                resolved(value)
        else:
            assert resolved(value) == expected
            assert resolve_path(value) == Path(expected)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=10) | PATH_TEXT)
@example("/a b/%/?#/é")
def test_file_uri_is_what_pathlib_makes_of_an_absolute_path(text: str) -> None:
    path = os.path.normpath("/" + text.replace("\x00", ""))  # as os.path.realpath gives it
    assert file_uri(path) == Path(path).as_uri()
