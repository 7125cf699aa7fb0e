"""SQL models written as dbt writes them, loaded without dbt: one `.sql` file per model.

A model file is plain SQL plus the three dbt Jinja calls this loader understands:

- `{{ ref('name') }}`: another model, or a table a Python asset writes (`llm_signals`, ...);
- `{{ source('pm', 'name') }}`: the same tables, as a dbt project would declare them;
- `{{ config(materialized='table') }}`: `table` (the default) or `view`.

A `schema.yml` beside the files (dbt's format: `version: 2`, `models:` with `description`,
`config.materialized`, `columns` and their `data_tests` or `tests`) sets descriptions and tests:
`not_null`, `unique`, `accepted_values: {values: [...]}` per column, and
`dbt_utils.unique_combination_of_columns: {combination_of_columns: [...]}` per model. Anything
else is refused when the models load, naming the file, so a file that loads here is a valid dbt
model (see docs/marts.md for moving to dbt-duckdb and dagster-dbt).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MATERIALIZATIONS = ("table", "view")
SOURCE_NAME = "pm"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_JINJA = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_CALL = re.compile(r"^\s*(ref|source|config)\s*\((.*)\)\s*$", re.DOTALL)


class SqlModelError(ValueError):
    """A model file or schema.yml is malformed; the message names the file."""


@dataclass(frozen=True)
class ColumnTest:
    """One data test: `name` is what the asset check is called (`<column>_<test>` or the model test)."""

    name: str
    kind: str  # not_null | unique | accepted_values | unique_combination_of_columns
    columns: tuple[str, ...]
    values: tuple[object, ...] = ()
    description: str = ""

    def failing_rows_sql(self, table: str) -> tuple[str, list[object]]:
        """A query counting the rows that fail the test (0 passes), and its parameters."""
        cols = ", ".join(self.columns)
        if self.kind == "not_null":
            return f"SELECT count(*) FROM {table} WHERE {self.columns[0]} IS NULL", []
        if self.kind in ("unique", "unique_combination_of_columns"):
            return (f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {table} GROUP BY {cols} "
                    f"HAVING count(*) > 1)", [])
        placeholders = ", ".join("?" for _ in self.values)
        return (f"SELECT count(*) FROM {table} WHERE {self.columns[0]} IS NOT NULL "
                f"AND {self.columns[0]} NOT IN ({placeholders})", list(self.values))


@dataclass(frozen=True)
class SqlModel:
    name: str
    path: Path
    sql: str  # the file with every Jinja call rendered: plain DuckDB SQL
    refs: tuple[str, ...]
    materialized: str = "table"
    description: str = ""
    column_descriptions: Mapping[str, str] = field(default_factory=dict)
    tests: tuple[ColumnTest, ...] = ()


def _render(path: Path, text: str) -> tuple[str, list[str], dict[str, object]]:
    refs: list[str] = []
    config: dict[str, object] = {}

    def replace(match: re.Match) -> str:
        call = _CALL.match(match.group(1))
        if not call:
            raise SqlModelError(f"{path}: unsupported Jinja {match.group(0).strip()!r}: only ref(), "
                                "source() and config() are understood")
        kind, arguments = call.groups()
        try:
            parsed = ast.parse(f"f({arguments})", mode="eval").body
            args = [ast.literal_eval(a) for a in parsed.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in parsed.keywords}
        except (SyntaxError, ValueError) as exc:
            raise SqlModelError(f"{path}: cannot read {match.group(0).strip()!r}: {exc}") from None
        if kind == "config":
            unknown = sorted(set(kwargs) - {"materialized"}) or (["a positional argument"] if args else [])
            if unknown:
                raise SqlModelError(f"{path}: config() supports materialized= only, got {', '.join(unknown)}")
            config.update(kwargs)
            return ""
        if kind == "source":
            if len(args) != 2 or kwargs or args[0] != SOURCE_NAME:
                raise SqlModelError(f"{path}: write source('{SOURCE_NAME}', 'table'), got {match.group(0).strip()!r}")
            name = args[1]
        else:
            if len(args) != 1 or kwargs:
                raise SqlModelError(f"{path}: write ref('name'), got {match.group(0).strip()!r}")
            name = args[0]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise SqlModelError(f"{path}: {name!r} is not a table name (lower case, digits, _)")
        refs.append(name)
        return name

    sql = _JINJA.sub(replace, _COMMENT.sub("", text))
    if "{%" in sql or "{{" in sql:
        raise SqlModelError(f"{path}: Jinja blocks ({{% ... %}}) are not supported; write plain SQL")
    return sql.strip().rstrip(";").strip(), list(dict.fromkeys(refs)), config


def _tests(path: Path, model: str, entry: Mapping) -> list[ColumnTest]:
    tests: list[ColumnTest] = []
    for column in entry.get("columns") or []:
        name = column.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise SqlModelError(f"{path}: model {model}: column name {name!r} is not valid")
        for test in column.get("data_tests", column.get("tests")) or []:
            kind, options = (test, {}) if isinstance(test, str) else next(iter(test.items()))
            if kind in ("not_null", "unique"):
                tests.append(ColumnTest(f"{name}_{kind}", kind, (name,)))
            elif kind == "accepted_values":
                values = (options or {}).get("values")
                if not values:
                    raise SqlModelError(f"{path}: model {model}: accepted_values on {name} needs values: [...]")
                tests.append(ColumnTest(f"{name}_accepted_values", kind, (name,), tuple(values)))
            else:
                raise SqlModelError(f"{path}: model {model}: column test {kind!r} on {name} is not supported "
                                    "(not_null, unique, accepted_values)")
    for test in entry.get("data_tests", entry.get("tests")) or []:
        kind, options = (test, {}) if isinstance(test, str) else next(iter(test.items()))
        columns = (options or {}).get("combination_of_columns")
        if kind != "dbt_utils.unique_combination_of_columns" or not columns:
            raise SqlModelError(f"{path}: model {model}: model test {kind!r} is not supported "
                                "(dbt_utils.unique_combination_of_columns with combination_of_columns)")
        tests.append(ColumnTest("unique_" + "_".join(columns), "unique_combination_of_columns", tuple(columns)))
    return tests


def _schema_entries(folder: Path) -> dict[str, tuple[Path, Mapping]]:
    entries: dict[str, tuple[Path, Mapping]] = {}
    for path in sorted([*folder.rglob("*.yml"), *folder.rglob("*.yaml")]):
        if path.name == "dbt_project.yml":
            continue
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise SqlModelError(f"{path}: not valid YAML: {exc}") from None
        for entry in document.get("models") or []:
            name = entry.get("name")
            if name in entries:
                raise SqlModelError(f"{path}: model {name!r} is described twice (also in {entries[name][0]})")
            entries[name] = (path, entry)
    return entries


def load_models(folder: Path, tables: Iterable[str]) -> list[SqlModel]:
    """Every model under `folder`, dependencies first. `tables` are the tables Python assets
    write, which a ref() may name besides the models. Raises SqlModelError naming the file for a
    duplicate model name, an unknown ref, a cycle, or a schema.yml entry without a file."""
    known_tables = set(tables)
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.sql")):
        name = path.stem
        if not _NAME.fullmatch(name):
            raise SqlModelError(f"{path}: a model's file name is its table name: lower case, digits and _")
        if name in files:
            raise SqlModelError(f"{path}: model {name!r} is defined twice (also {files[name]})")
        if name in known_tables:
            raise SqlModelError(f"{path}: model {name!r} would replace the table a Python asset writes")
        files[name] = path
    entries = _schema_entries(folder)
    for name, (path, _) in entries.items():
        if name not in files:
            raise SqlModelError(f"{path}: describes model {name!r}, but there is no {name}.sql")
    models: dict[str, SqlModel] = {}
    for name, path in files.items():
        sql, refs, config = _render(path, path.read_text(encoding="utf-8"))
        if not sql:
            raise SqlModelError(f"{path}: the model has no SQL")
        unknown = [r for r in refs if r not in files and r not in known_tables]
        if unknown:
            raise SqlModelError(f"{path}: ref('{unknown[0]}') is neither a model nor a table of the asset graph "
                                f"(tables: {', '.join(sorted(known_tables))})")
        schema_path, entry = entries.get(name, (path, {}))
        materialized = config.get("materialized") or (entry.get("config") or {}).get("materialized") or "table"
        if materialized not in MATERIALIZATIONS:
            raise SqlModelError(f"{path}: materialized={materialized!r}: use table or view")
        models[name] = SqlModel(
            name=name, path=path, sql=sql, refs=tuple(refs), materialized=materialized,
            description=(entry.get("description") or "").strip(),
            column_descriptions={c["name"]: (c.get("description") or "").strip() for c in entry.get("columns") or []},
            tests=tuple(_tests(schema_path, name, entry)),
        )
    return _in_dependency_order(models)


def _in_dependency_order(models: dict[str, SqlModel]) -> list[SqlModel]:
    ordered: list[SqlModel] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = chain[chain.index(name):] + [name]
            raise SqlModelError(f"{models[name].path}: ref() cycle {' -> '.join(cycle)}")
        state[name] = "visiting"
        for ref in models[name].refs:
            if ref in models:
                visit(ref, [*chain, name])
        state[name] = "done"
        ordered.append(models[name])

    for name in sorted(models):
        visit(name, [])
    return ordered
