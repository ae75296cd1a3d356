"""The docs cannot drift from the code: hooks, variables and sinks are checked both ways.

- every hook spec has a heading in docs/hooks.md with its exact signature, and every hook
  heading there is a real hook;
- every ``CAPTURE_*`` variable of core (``core.config.VARIABLES``) and of the built-in sinks (as
  they register them) has a row in docs/configuration.md with its default, and every documented
  ``CAPTURE_*`` row exists;
- every built-in sink has a heading in docs/sinks.md;
- the Python blocks of the plugin docs are valid Python, and the tutorial shows `SinkContext` and
  the `WriteResult` constructors as they are.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from capture_ext import hookspecs
from capture_ext.core.config import VARIABLES, Variable
from capture_ext.core.config_check import builtin_sink_variables
from capture_ext.variables import default_cell

#: Core's variables and the built-in sinks'.
ALL_VARIABLES = VARIABLES + builtin_sink_variables()[0]

DOCS = Path(__file__).resolve().parents[3] / "docs"
EMPTY_DEFAULTS = {"", "—", "-", "(none)", "(unset)", "unset", "none", "(required)", "required"}


def hook_specs() -> dict[str, object]:
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {name: fn for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, marker)}


def signature_text(name: str, fn: object) -> str:
    """``name(arg: Type) -> Ret`` exactly as written in hookspecs.py (string annotations)."""
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    params = ", ".join(
        f"{p.name}: {p.annotation}" if p.annotation is not inspect.Parameter.empty else p.name
        for p in sig.parameters.values()
    )
    ret = "" if sig.return_annotation is inspect.Signature.empty else f" -> {sig.return_annotation}"
    return f"{name}({params}){ret}"


def sections(text: str, level: str = "##") -> dict[str, str]:
    """Heading text (backticks removed) -> the section body up to the next heading of that level."""
    parts = re.split(rf"^{level} +(.+)$", text, flags=re.M)
    return {parts[i].strip().strip("`").strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def read(name: str) -> str:
    path = DOCS / name
    if not path.exists():
        pytest.fail(f"docs/{name} is missing")
    return path.read_text()


# -- hooks -------------------------------------------------------------------------------------
def test_hookspecs_module_has_hooks() -> None:
    assert set(hook_specs()) >= {"capture_register_sinks", "capture_prepare_record"}


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_is_documented_with_its_exact_signature(name: str) -> None:
    documented = sections(read("hooks.md"))
    assert name in documented, f"docs/hooks.md has no '## `{name}`' heading"
    expected = signature_text(name, hook_specs()[name])
    assert expected in documented[name], f"docs/hooks.md section {name!r} does not show `{expected}`"
    body = documented[name]
    for topic in ("When it is called", "May it block", "Example"):
        assert topic in body, f"docs/hooks.md section {name!r} lacks '{topic}'"


def test_every_documented_hook_exists() -> None:
    documented = {h for h in sections(read("hooks.md")) if h.startswith("capture_")}
    assert documented <= set(hook_specs()), f"docs/hooks.md documents unknown hooks: {documented - set(hook_specs())}"


# -- configuration -----------------------------------------------------------------------------
def documented_variables() -> dict[str, list[str]]:
    """``CAPTURE_*`` name -> the cells of its table row in docs/configuration.md."""
    rows: dict[str, list[str]] = {}
    for line in read("configuration.md").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and (match := re.fullmatch(r"`(CAPTURE_[A-Z0-9_]+)`", cells[0])):
            rows[match.group(1)] = cells
    return rows


def default_shown(cell: str) -> str:
    return cell.strip().strip("`").strip()


@pytest.mark.parametrize("var", ALL_VARIABLES, ids=lambda v: v.name)
def test_every_variable_is_documented_with_its_default(var: Variable) -> None:
    rows = documented_variables()
    assert var.name in rows, f"docs/configuration.md has no table row for `{var.name}`"
    shown = default_shown(rows[var.name][1])
    accepted = {default_shown(var.default_doc)} if var.default_doc else {var.default}
    if var.required:
        accepted = {default_shown(default_cell(var))}
    elif not var.default and not var.default_doc:
        accepted = EMPTY_DEFAULTS
    assert shown in accepted, f"docs/configuration.md shows default {shown!r} for {var.name}, expected {accepted}"


def test_every_documented_variable_exists() -> None:
    """Documented variables are in VARIABLES, or read by the launcher or the client themselves."""
    root = DOCS.parent
    readers = [root / "extensions" / "capture-ext", root / "capture_ext" / "client.py"]
    elsewhere = "\n".join(path.read_text() for path in readers if path.exists())
    known = {v.name for v in ALL_VARIABLES}
    stale = {name for name in documented_variables() if name not in known and name not in elsewhere}
    assert not stale, f"docs/configuration.md documents variables the code does not read: {sorted(stale)}"


# -- sinks -------------------------------------------------------------------------------------
def builtin_sinks() -> list[str]:
    from capture_ext.core.plugins import get_plugin_manager

    plugins = get_plugin_manager(load_entrypoints=True)
    names = [n for n in plugins.sink_factories() if plugins.sink_owner(n).startswith("builtin_")]
    assert names, f"no built-in sink is registered: {plugins.errors}"
    return sorted(names)


def test_every_builtin_sink_is_documented() -> None:
    text = read("sinks.md")
    headings = {h for level in ("##", "###") for h in sections(text, level)}
    missing = [name for name in builtin_sinks() if not any(re.search(rf"\b{name}\b", h) for h in headings)]
    assert not missing, f"docs/sinks.md has no heading for built-in sinks {missing}"


# -- code blocks -------------------------------------------------------------------------------
@pytest.mark.parametrize("page", ["hooks.md", "writing-sinks.md"])
def test_python_blocks_are_valid_python(page: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", read(page), flags=re.S)
    assert blocks, f"docs/{page} has no python blocks"
    for block in blocks:
        try:
            ast.parse(block)
        except SyntaxError as exc:
            pytest.fail(f"docs/{page}: invalid Python block ({exc}):\n{block}")


# -- the sink contract as the tutorial tells it ---------------------------------------------------
def test_tutorial_documents_every_sink_context_field() -> None:
    from dataclasses import fields

    from capture_ext.models import SinkContext

    text = read("writing-sinks.md")
    table = text[text.index("| attribute | what it is |") :].split("\n\n", 1)[0]
    documented = set(re.findall(r"`(\w+)`", table))
    missing = {f.name for f in fields(SinkContext)} - documented
    assert not missing, f"docs/writing-sinks.md: SinkContext fields missing from the table: {sorted(missing)}"


@pytest.mark.parametrize("constructor", ["ok", "retryable", "fatal"])
def test_tutorial_shows_write_result_constructors_as_they_are(constructor: str) -> None:
    from capture_ext.models import WriteResult

    params = inspect.signature(getattr(WriteResult, constructor)).parameters.values()
    args = ", ".join(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}" for p in params)
    call = f"WriteResult.{constructor}({args})"
    assert call in read("writing-sinks.md"), f"docs/writing-sinks.md does not show `{call}`"


def test_tutorial_documents_every_field_of_an_enriched_record() -> None:
    from capture_ext.core.records import Enricher, normalize

    record = Enricher("fn", "1", "env").enrich(normalize({"input": "q", "output": "a"}))
    text = read("writing-sinks.md")
    table = text[text.index("| field | example |") :].split("\n\n", 1)[0]
    missing = set(record) - set(re.findall(r"`(\w+)`", table))
    assert not missing, f"docs/writing-sinks.md: record fields missing from the table: {sorted(missing)}"


def test_variables_read_outside_config_are_documented_too() -> None:
    root = DOCS.parent
    readers = [root / "extensions" / "capture-ext", root / "capture_ext" / "client.py"]
    used = {name for path in readers if path.exists() for name in re.findall(r"CAPTURE_[A-Z0-9_]+", path.read_text())}
    missing = used - set(documented_variables())
    assert not missing, f"docs/configuration.md lacks rows for {sorted(missing)} (read by the launcher or client)"


def test_hooks_md_prepare_example_works() -> None:
    """The redaction example of docs/hooks.md, registered as a plugin, does what the page says."""
    import types

    from capture_ext.core.plugins import get_plugin_manager

    section = sections(read("hooks.md"))["capture_prepare_record"]
    [example] = [b for b in re.findall(r"```python\n(.*?)```", section, flags=re.S) if "EMAIL" in b]
    plugin = types.ModuleType("hooks_md_example")
    exec(compile(example, "docs/hooks.md", "exec"), plugin.__dict__)
    plugins = get_plugin_manager(load_entrypoints=False)
    assert plugins.register(plugin, "hooks_md_example"), plugins.errors
    record = {"input": {"question": "mail ada@example.com now"}, "metadata": {}}
    plugins.prepare_record(record)
    assert record == {"input": {"question": "mail <email> now"}, "metadata": {"redacted": True}}
    untouched = {"input": "plain text", "metadata": {}}
    plugins.prepare_record(untouched)
    assert untouched == {"input": "plain text", "metadata": {}}


def test_every_test_the_guarantees_cite_exists() -> None:
    """A promise is only as good as the test that proves it: a cited test that is gone proves nothing."""
    root = Path(__file__).resolve().parents[3]
    cited = set(re.findall(r"`(tests/[\w/]+\.py)`", read("guarantees.md")))
    assert cited, "docs/guarantees.md cites no test"
    missing = sorted(path for path in cited if not (root / path).is_file())
    assert not missing, f"docs/guarantees.md cites tests that do not exist: {missing}"
