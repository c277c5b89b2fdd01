"""The design's rules, held by tests: each fails when its rule is broken.

* layering: ``store`` and ``adapters`` never import ``daemon``; ``store`` never imports
  ``adapters``; inside ``daemon``, the flows ``ingest`` and ``delivery`` never import each
  other, and ``inbound`` imports nothing inside either (only what their ``__init__`` itself
  offers); each code folder imports its own modules relatively;
* ``status`` (and ``--help``, ``--version``) stays light: no event loop, no HTTP client,
  no structlog, nothing of the daemon's runtime;
* ``Change``'s fields are, in order, the columns of the ``records`` upsert;
* one copy of each rule: one ``now_ms``; the provider kinds come from the adapter registry;
  one canonical body and digest (``documents.canonical``); one future-timestamp check
  (``documents.FutureLimit``); one backoff formula (``store.backoff.backoff_s``);
* one provider health (``daemon.delivery.provider_health``): it alone applies the Retry-After cap
  and writes a provider's state; the daemon names states by the ``ProviderState`` enum;
* each kind in one home: no file of ``daemon/`` or ``store/`` names a provider kind (the
  daemon dispatches through the ``Kind`` contract), and a kind's declaration is light.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from dropsync.adapters.registry import KINDS
from dropsync.daemon.config import parse_config
from dropsync.daemon.errors import ConfigError
from dropsync.store import merge
from dropsync.store.handle import Store
from dropsync.store.merge import Change, apply_changes
from dropsync.store.states import ProviderState

from tests.support import ROOT, query

CODE_FOLDERS = {
    "daemon": "dropsync.daemon",
    "store": "dropsync.store",
    "adapters": "dropsync.adapters",
}


def _modules(folder: str, root: Path = ROOT) -> Iterator[tuple[Path, str]]:
    """(file, dotted module name) of every module in a code folder (of ``root``)."""
    for path in sorted((root / folder).rglob("*.py")):
        parts = path.relative_to(root / folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, ".".join((CODE_FOLDERS[folder], *parts))


def imports_of(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, anywhere in it (functions, TYPE_CHECKING blocks too)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"dropsync\.(daemon|store|adapters)(\.\w+)*", node.value)
        ):
            found.add(node.value)  # importlib.import_module("dropsync.daemon...") counts too
    return found


FORBIDDEN = {
    "store": ("dropsync.daemon", "dropsync.adapters"),
    "adapters": ("dropsync.daemon",),
}


def layering_violations() -> list[str]:
    """``file: imported module`` for every import that crosses the layers the wrong way."""
    found = []
    for folder, forbidden in FORBIDDEN.items():
        for path, module in _modules(folder):
            for name in sorted(imports_of(path, module)):
                if (name + ".").startswith(tuple(f + "." for f in forbidden)):
                    found.append(f"{path.relative_to(ROOT)}: imports {name}")
    return found


def test_store_and_adapters_never_import_the_layers_above() -> None:
    assert layering_violations() == []


def test_the_layering_check_sees_imports_of_every_shape(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "import dropsync.daemon.clock\n"
        "if TYPE_CHECKING:\n    from dropsync.daemon.config import Config\n"
        "def f():\n    from ..daemon.process import runner\n"
        "    importlib.import_module('dropsync.daemon.process.logs')\n"
    )
    found = imports_of(sample, "dropsync.store.sample")
    assert {
        "dropsync.daemon.clock",
        "dropsync.daemon.config",
        "dropsync.daemon.process.runner",
        "dropsync.daemon.process.logs",
    } <= found


# --- the daemon's flows -----------------------------------------------------------------------

FLOWS = ("ingest", "delivery", "inbound", "process")
# (importing flow, imported flow): what of the imported flow is refused. "all": the package
# and everything in it; "inside": its modules (a name its __init__ itself defines is its
# public face, and allowed).
FLOW_RULES = {
    ("ingest", "delivery"): "all",
    ("delivery", "ingest"): "all",
    ("inbound", "ingest"): "inside",
    ("inbound", "delivery"): "inside",
}


def flow_of(module: str) -> str | None:
    """The flow package of ``dropsync.daemon`` a dotted name is in, if any."""
    parts = module.split(".")
    if parts[:2] == ["dropsync", "daemon"] and len(parts) > 2 and parts[2] in FLOWS:
        return parts[2]
    return None


def is_inside(name: str, root: Path = ROOT) -> bool:
    """Whether ``name`` is a module of a flow package, or a name in one (not in its __init__)."""
    parts = name.split(".")[2:]  # the flow, then a module or a name of its __init__
    if len(parts) < 2:
        return False
    folder = root / "daemon" / parts[0]
    return (folder / f"{parts[1]}.py").exists() or (folder / parts[1] / "__init__.py").exists()


def flow_violations(root: Path = ROOT) -> list[str]:
    """``file: imported name`` for every import of one flow by another that its rule refuses."""
    found = []
    for path, module in _modules("daemon", root):
        mine = flow_of(module)
        for name in sorted(imports_of(path, module)):
            refused = FLOW_RULES.get((mine or "", flow_of(name) or ""))
            if refused == "all" or (refused == "inside" and is_inside(name, root)):
                found.append(f"{path.relative_to(root)}: imports {name}")
    return found


def test_ingest_and_delivery_never_import_each_other_and_inbound_neither_s_insides() -> None:
    assert flow_violations() == [], "the runner wires the flows together (docs/architecture.md)"


def test_the_flow_check_refuses_each_rule_broken(tmp_path: Path) -> None:
    files = {
        "daemon/__init__.py": "",
        "daemon/ingest/__init__.py": "",
        "daemon/ingest/watcher.py": "from ..delivery.flusher import Flusher\n",
        "daemon/ingest/inbox.py": "from .. import delivery\nfrom ..clock import now_ms\n",
        "daemon/delivery/__init__.py": "WAKE = 'wake'\n",
        "daemon/delivery/flusher.py": "",
        "daemon/delivery/pulls.py": "import dropsync.daemon.ingest\nfrom ..process import logs\n",
        "daemon/inbound/__init__.py": "",
        "daemon/inbound/listener.py": (
            "from ..delivery import WAKE\n"  # its package's own name: allowed
            "from ..delivery import flusher\n"
            "def f():\n    from dropsync.daemon.ingest.inbox import InboxApplier\n"
        ),
        "daemon/process/__init__.py": "",
        "daemon/process/runner.py": "from ..ingest import watcher\nfrom ..delivery import pulls\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert flow_violations(tmp_path) == [
        "daemon/delivery/pulls.py: imports dropsync.daemon.ingest",
        "daemon/inbound/listener.py: imports dropsync.daemon.delivery.flusher",
        "daemon/inbound/listener.py: imports dropsync.daemon.ingest.inbox",
        "daemon/inbound/listener.py: imports dropsync.daemon.ingest.inbox.InboxApplier",
        "daemon/ingest/inbox.py: imports dropsync.daemon.delivery",
        "daemon/ingest/watcher.py: imports dropsync.daemon.delivery.flusher",
        "daemon/ingest/watcher.py: imports dropsync.daemon.delivery.flusher.Flusher",
    ]


def absolute_imports_of_their_own(root: Path = ROOT) -> list[str]:
    """``file:line`` of each import statement that names its own code folder's package
    absolutely (``dropsync.daemon...`` in ``daemon/``): inside a package, imports are
    relative, so that any tool reads the structure from the folders alone."""
    found = []
    for folder, package in CODE_FOLDERS.items():
        for path, _module in _modules(folder, root):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                else:
                    continue
                if any(name == package or name.startswith(package + ".") for name in names):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_each_code_folder_imports_its_own_modules_relatively(tmp_path: Path) -> None:
    assert absolute_imports_of_their_own() == []
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "a.py").write_text(
        "from . import b\nfrom dropsync.daemon import clock\n"  # another package: absolute
        "import dropsync.store.b\nfrom dropsync.store.b import c\n"
        "MODULE = 'dropsync.store.b'\n"  # a string (an import_module name) is left alone
    )
    assert absolute_imports_of_their_own(tmp_path) == ["store/a.py:3", "store/a.py:4"]


# --- status stays light ----------------------------------------------------------------------

HEAVY = {"anyio", "aiosqlite", "httpx", "structlog", "orjson", "watchfiles", "ijson", "uvicorn"}
# Everything of dropsync that `status` may load: the CLI's frame, its own module, and the
# stdlib-only helpers that find and read the store.
STATUS_MODULES = {
    "dropsync",
    "dropsync.daemon",
    "dropsync.daemon.cli",
    "dropsync.daemon.cli.app",
    "dropsync.daemon.cli.common",
    "dropsync.daemon.cli.outcome",
    "dropsync.daemon.cli.shortcut",
    "dropsync.daemon.cli.status",
    "dropsync.daemon.clock",
    "dropsync.daemon.config_file",
    "dropsync.daemon.errors",
    "dropsync.daemon.process",  # the package (its __init__ imports nothing)
    "dropsync.daemon.process.runstate",  # the daemon's runtime state file (stdlib only)
    "dropsync.daemon.simple_json",  # reads that file and writes --json without json
    "dropsync.daemon.cli.health_check",
    "dropsync.daemon.process.instance",
    "dropsync.store",
    "dropsync.store.diagnosis",
    "dropsync.store.errors",
    "dropsync.store.queries",
    "dropsync.store.readonly",
    "dropsync.store.schema",
    "dropsync.store.state_values",  # the provider states' texts (no enum)
}
# Not third-party code the command loads: site's own hooks and the coverage measurement.
HARNESS = (
    "__main__",
    "__mp_main__",
    "_distutils_hack",
    "__editable__",
    "_sysconfigdata_",
    "coverage",
    "$coverage",
    "_virtualenv",
    "sitecustomize",
)


def modules_loaded_by(
    argv: list[str] | None, tmp_path: Path, *, bare: bool = False
) -> tuple[int, set[str]]:
    """Run ``dropsync ARGV`` in a fresh interpreter; its exit code and ``sys.modules`` at exit.

    ``argv`` None: nothing, for what the interpreter loads before any command. ``bare``:
    without site (``python -S``), the checkout's code found through a tree of links, so
    that what an install's import hook loads at start (an editable install's loads
    pathlib) is not counted as the command's.
    """
    listing = tmp_path / "modules.txt"
    script = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(listing)!r}, 'w').write('\\n'.join(sys.modules)))\n"
    )
    if bare:
        tree = tmp_path / "code"
        (tree / "dropsync").mkdir(parents=True, exist_ok=True)
        for folder in ("daemon", "store", "adapters"):
            link = tree / "dropsync" / folder
            if not link.exists():
                link.symlink_to(ROOT / folder, target_is_directory=True)
        script = f"import sys; sys.path.insert(0, {str(tree)!r})\n" + script
    if argv is not None:
        script += f"from dropsync.daemon.cli import main\nsys.exit(main({argv!r}))\n"
    # Without the coverage measurement CI runs the suite under: coverage starts in every
    # Python subprocess it sees (its environment variables), importing inspect, ast and more.
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE")}
    done = subprocess.run(
        [sys.executable, *(["-S"] if bare else []), "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    return done.returncode, set(listing.read_text().splitlines())


def third_party(modules: set[str]) -> set[str]:
    """Top-level modules that are neither the standard library, dropsync, nor the harness."""
    tops = {name.partition(".")[0] for name in modules}
    return {
        top
        for top in tops
        if top not in sys.stdlib_module_names and top != "dropsync" and not top.startswith(HARNESS)
    }


@pytest.fixture
def store_config(tmp_path: Path) -> Path:
    """A config naming a migrated, empty store."""
    config = tmp_path / "dropsync.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "s.db"}"\n')

    async def create() -> None:
        async with await Store.open(tmp_path / "s.db"):
            pass

    anyio.run(create)
    return config


@pytest.mark.parametrize("words", [["status"], ["status", "--json"], ["status", "--check"]])
def test_status_loads_no_heavy_module_and_nothing_of_the_daemon_runtime(
    tmp_path: Path, store_config: Path, words: list[str]
) -> None:
    code, modules = modules_loaded_by([*words, "--config", str(store_config)], tmp_path)
    assert code == (2 if "--check" in words else 0)  # --check: no daemon runs, critical
    assert modules & HEAVY == set()
    assert third_party(modules) == set()
    assert {m for m in modules if m.startswith("dropsync")} <= STATUS_MODULES
    if "--check" not in words:  # a status that finds nothing wrong makes no error class
        assert {"dropsync.daemon.errors", "dropsync.store.errors"} & modules == set()
    # The standard library's slow imports too (figures: bench/RESULTS.md, 2026-12-07), beyond
    # what the interpreter itself loads (without site: an editable install's hook loads pathlib).
    code, modules = modules_loaded_by([*words, "--config", str(store_config)], tmp_path, bare=True)
    assert code == (2 if "--check" in words else 0)
    _, started_with = modules_loaded_by(None, tmp_path, bare=True)
    assert started_with & SLOW_STDLIB == set()
    assert modules & SLOW_STDLIB == set()


# What status's usual command lines (``cli.shortcut``) never import: argparse (with gettext,
# locale and, as it builds a parser, shutil and its compressors), dataclasses (with inspect,
# ast, dis, tokenize), ~20 ms together of a status that took ~60; then pathlib (with
# urllib.parse, ipaddress, fnmatch), tomllib (with string; ``config_file.simple_toml`` reads
# a plain config) and typing (NamedTuple included), ~10 ms of one that took ~40; then json
# with re and enum (``simple_json`` reads and writes status's JSON; ``store.state_values``
# are the states' texts), ~9 ms of one that took ~30 (a regular install, whose console
# script is bin/dropsync: the one pip writes imports re).
SLOW_STDLIB = {
    "argparse",
    "gettext",
    "locale",
    "shutil",
    "bz2",
    "lzma",
    "dataclasses",
    "inspect",
    "ast",
    "dis",
    "tokenize",
    "pathlib",
    "urllib.parse",
    "ipaddress",
    "fnmatch",
    "tomllib",
    "string",
    "typing",
    "json",
    "re",
    "enum",
}


# What the help of every command may load besides: the kinds' declarations (``emulate`` has
# a port option per kind's emulator), which are light (stdlib only) by the Kind contract.
KIND_DECLARATIONS = {
    "dropsync.adapters",
    "dropsync.adapters.options",
    "dropsync.adapters.registry",
    *(f"dropsync.adapters.{kind}" for kind in KINDS),
}


@pytest.mark.parametrize("words", [["--help"], ["--version"], ["status", "--help"]])
def test_help_and_version_load_no_heavy_module(tmp_path: Path, words: list[str]) -> None:
    code, modules = modules_loaded_by(words, tmp_path)
    assert code == 0
    assert third_party(modules) == set()
    runtime = {m for m in modules if m.startswith("dropsync.") and ".cli" not in m}
    assert runtime <= STATUS_MODULES | KIND_DECLARATIONS


# --- Change and the records upsert ------------------------------------------------------------

# The two fields whose names differ from their columns.
COLUMN_OF_FIELD = {"ts": "updated_at", "inbox_id": "change_id"}


def upsert_columns() -> list[str]:
    """The column list of ``INSERT INTO record_keys (...)`` in store/merge.py."""
    match = re.search(r"INSERT INTO record_keys \(([^)]*)\)", merge._UPSERT_KEY)
    assert match, "store.merge._UPSERT_KEY is not an INSERT INTO record_keys (...)"
    return [column.strip() for column in match[1].split(",")]


def test_change_fields_are_the_record_keys_upsert_columns_in_order() -> None:
    columns = upsert_columns()
    fields = [COLUMN_OF_FIELD.get(name, name) for name in Change._fields if name != "body"]
    assert columns[: len(fields)] == fields
    assert columns[len(fields) :] == ["body_id", "merged_at"]


def test_a_merged_change_lands_in_the_columns_of_its_fields(tmp_path: Path) -> None:
    change = Change(
        collection="c",
        key="k",
        body='{"v":1}',
        ts=1_700_000_000_123,
        deleted=False,
        origin="sql",
        digest="d" * 64,
        file_id=None,
        doc_index=None,
        inbox_id=None,
    )

    async def merge_one() -> None:
        async with await Store.open(tmp_path / "s.db") as store:
            await store.transact(lambda db: apply_changes(db, [change], {}, now=42))

    anyio.run(merge_one)
    columns = ", ".join(COLUMN_OF_FIELD.get(name, name) for name in Change._fields[:7])
    [row] = query(tmp_path / "s.db", f"SELECT {columns}, merged_at FROM records")
    assert row == (*change[:4], 0, *change[5:7], 42)


# --- one copy of each rule --------------------------------------------------------------------


def is_emulator(module: str) -> bool:
    """Whether ``module`` is emulator code: the shared machinery or a kind's emulator."""
    return module.startswith("dropsync.adapters.emulators") or module.endswith(".emulator")


def definitions_of(*names: str) -> list[str]:
    """``module`` of every function called one of ``names`` in the product code.

    The emulators (``adapters/emulators``, each kind's ``emulator`` module) are left out: they
    stand for the providers' own servers, whose clocks are not the daemon's (a test may set
    them apart).
    """
    found = []
    for folder in CODE_FOLDERS:
        for path, module in _modules(folder):
            if is_emulator(module):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            found += [
                module
                for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in names
            ]
    return found


def test_one_now_ms() -> None:
    assert definitions_of("now_ms", "_now_ms") == ["dropsync.daemon.clock"]


def test_the_config_accepts_exactly_the_kinds_of_the_adapter_registry() -> None:
    for kind in KINDS:
        raw = {"providers": {"p": {"kind": kind, "base_url": "http://127.0.0.1:1"}}}
        assert parse_config(raw, "<test>").providers["p"].kind == kind
    with pytest.raises(ConfigError) as refused:
        parse_config({"providers": {"p": {"kind": "nope", "base_url": "http://x"}}}, "<test>")
    assert str(refused.value) == (
        f"<test>: providers.p.kind: unknown kind 'nope'; expected one of {', '.join(KINDS)}"
    )


def _product_trees() -> Iterator[tuple[str, ast.AST]]:
    """(module, syntax tree) of the product code, emulators left out (see definitions_of)."""
    for folder in CODE_FOLDERS:
        for path, module in _modules(folder):
            if not is_emulator(module):
                yield module, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _enclosing_functions(tree: ast.AST, wanted: Callable[[ast.AST], bool]) -> list[str]:
    """The name of the function around each node ``wanted`` picks (``""`` at module level)."""
    found: list[str] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if wanted(node):
            found.append(function)
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "")
    return found


def _is_digest(node: ast.AST) -> bool:
    # sha256(...).hexdigest()[:32]: a digest cut to the length the store keeps.
    return (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and node.value.func.attr == "hexdigest"
    )


def test_one_canonical_body_and_digest() -> None:
    # Keys sorted for a body, and a body digest, are written in documents.canonical alone.
    sorting, digests = [], []
    for module, tree in _product_trees():
        sorting += [
            f"{module}.{function}"
            for function in _enclosing_functions(
                tree, lambda node: isinstance(node, ast.Attribute) and node.attr == "OPT_SORT_KEYS"
            )
        ]
        digests += [f"{module}.{function}" for function in _enclosing_functions(tree, _is_digest)]
    assert set(sorting) == {
        "dropsync.daemon.documents.canonical",
        "dropsync.daemon.documents._canonical_slowly",  # the same body, long integers kept
    }
    assert digests == ["dropsync.daemon.documents.canonical"]


def _skewed(node: ast.AST) -> bool:
    """An operand that is, or adds, an allowed clock skew (``max_skew_ms`` and the like)."""
    if isinstance(node, ast.Name):
        return "skew" in node.id.lower()
    if isinstance(node, ast.Attribute):
        return "skew" in node.attr.lower()
    if isinstance(node, ast.BinOp):
        return _skewed(node.left) or _skewed(node.right)
    return False


def test_one_future_timestamp_check() -> None:
    # The allowed clock skew is added to a clock, or compared with, in FutureLimit alone.
    found = [
        f"{module}.{function}"
        for module, tree in _product_trees()
        for function in _enclosing_functions(
            tree,
            lambda node: (
                (
                    isinstance(node, ast.BinOp)
                    and isinstance(node.op, ast.Add)
                    and (_skewed(node.left) or _skewed(node.right))
                )
                or (
                    isinstance(node, ast.Compare)
                    and any(map(_skewed, [node.left, *node.comparators]))
                )
            ),
        )
    ]
    assert found == ["dropsync.daemon.documents.at"]  # FutureLimit.at


def _doubles(node: ast.AST) -> bool:
    """``2 ** n`` (or ``2.0 ** n``) for a variable ``n``: the heart of an exponential backoff
    (a constant power of two, such as SQLite's integer range, is not one)."""
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Pow)
        and isinstance(node.left, ast.Constant)
        and node.left.value == 2
        and not isinstance(node.right, ast.Constant)
    )


def test_one_backoff_formula() -> None:
    # Every retry loop waits what store.backoff.backoff_s says (jittered or not).
    found = [
        f"{module}.{function}"
        for module, tree in _product_trees()
        for function in _enclosing_functions(tree, _doubles)
    ]
    assert found == ["dropsync.store.backoff.backoff_s"]


# --- one provider health -----------------------------------------------------------------------

STATE_VALUES = {state.value for state in ProviderState}
# The store functions that write a provider's state or its wait.
STATE_WRITERS = {
    "set_provider_state",
    "record_pull_failure",
    "record_pull_ok",
    "hold_provider",
}


def _daemon_trees() -> Iterator[tuple[str, ast.AST]]:
    for module, tree in _product_trees():
        if module.startswith("dropsync.daemon"):
            yield module, tree


def test_provider_states_are_the_enum_in_the_daemon() -> None:
    # A state is ProviderState.X in daemon/, never its text (store/ owns the SQL that holds it).
    found = [
        f"{module}.{function}"
        for module, tree in _daemon_trees()
        for function in _enclosing_functions(
            tree, lambda node: isinstance(node, ast.Constant) and node.value in STATE_VALUES
        )
    ]
    assert found == []


def test_one_retry_after_cap() -> None:
    # max_retry_after_s is applied in ProviderHealth alone (config.py defines it and the
    # ceiling of every wait, max_delay_s).
    found = {
        f"{module}.{function}"
        for module, tree in _daemon_trees()
        for function in _enclosing_functions(
            tree,
            lambda node: isinstance(node, ast.Attribute) and node.attr == "max_retry_after_s",
        )
        if module != "dropsync.daemon.config"
    }
    assert found == {"dropsync.daemon.delivery.provider_health._retry_after"}


def test_only_the_provider_health_writes_a_provider_s_state() -> None:
    found = {
        module
        for module, tree in _daemon_trees()
        for _ in _enclosing_functions(
            tree,
            lambda node: (
                isinstance(node, ast.Attribute)
                and node.attr in STATE_WRITERS
                and isinstance(node.value, ast.Name)
                and node.value.id == "outbox"
            ),
        )
    }
    assert found == {"dropsync.daemon.delivery.provider_health"}


# --- the README's test command is CI's --------------------------------------------------------


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [command] = [
        line
        for line in readme.splitlines()
        if line.startswith("python3 -m venv") and "[dev]" in line
    ]
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    assert command in ci


# --- each kind in one home ----------------------------------------------------------------------

# Files of daemon/ and store/ that may name a kind. The migrations are history (the schema
# of brands, crm_contacts, the registration_requests view: docs/adding-a-kind.md says why a
# kind's tables are made there); the example config is the config reference, documentation
# that shows every kind's keys (docs/config.md shows it whole). The systemd units in
# daemon/unit_files are links to systemd/, whose files they are.
NAMES_KINDS = ("store/migrations/*.sql", "daemon/config_example.toml")


def kind_mentions(path: Path, kinds: tuple[str, ...] = KINDS) -> list[str]:
    """``line: text`` of each line of ``path`` that names one of ``kinds``: in any case, in
    an identifier (``ChurnProvider``, ``stop_churn_id``), a string, an import or a comment;
    a plural name in the singular too (``registration``)."""
    stems = [kind[:-1] if kind.endswith("s") else kind for kind in kinds]
    pattern = re.compile("|".join(map(re.escape, stems)), re.IGNORECASE)
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        f"{number}: {line.strip()}" for number, line in enumerate(lines, 1) if pattern.search(line)
    ]


def daemon_and_store_files() -> Iterator[Path]:
    """Every file of daemon/ and store/ but the exempt ones (byte-code, caches, and links to
    files elsewhere left out)."""
    for folder in ("daemon", "store"):
        for path in sorted((ROOT / folder).rglob("*")):
            relative = path.relative_to(ROOT).as_posix()
            if (
                path.is_file()
                and "__pycache__" not in path.parts
                and not (path.is_symlink() and ROOT / folder not in path.resolve().parents)
                and not any(Path(relative).match(pattern) for pattern in NAMES_KINDS)
            ):
                yield path


def test_the_daemon_and_the_store_never_name_a_kind() -> None:
    # A kind is one home (adapters/<kind>/); the daemon asks its Kind, never its name.
    found = {
        str(path.relative_to(ROOT)): mentions
        for path in daemon_and_store_files()
        if (mentions := kind_mentions(path))
    }
    assert found == {}, "name the hook of the Kind contract instead (docs/adding-a-kind.md)"


def test_the_kind_check_sees_every_shape_of_a_name(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from dropsync.adapters.churn import adapter\n"
        "if provider.kind == 'CRM':\n"
        "    ChurnProvider, stop_churn_id = 1, 2  # a comment on favourites\n"
        "view = 'registration_requests'\n"
        "clean = 'a line about a provider'\n"
    )
    assert [line.split(":")[0] for line in kind_mentions(sample)] == ["1", "2", "3", "4"]
    assert kind_mentions(sample, ("newkind",)) == []


def test_a_kind_s_declaration_is_light(tmp_path: Path) -> None:
    # The config, --help and check-config read every kind's KIND: importing them loads
    # nothing but the standard library and the registry (a kind's modules load when used).
    listing = tmp_path / "modules.txt"
    script = (
        "import sys\n"
        "from dropsync.adapters.registry import every_kind\n"
        "assert [kind.name for kind in every_kind()]\n"
        f"open({str(listing)!r}, 'w').write('\\n'.join(sys.modules))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    modules = set(listing.read_text().splitlines())
    assert third_party(modules) == set()
    assert {m for m in modules if m.startswith("dropsync")} <= {"dropsync"} | KIND_DECLARATIONS
