"""The official Odoo field table (``$LEDGERWIRE_SPECS_DIR/odoo/account-move-fields.md``) as a validator.

Odoo publishes no OpenAPI/XSD for its external API: the field definitions in odoo/odoo are the schema,
written down in that markdown table (account.move, account.move.line, account.payment.register). This
module parses the table at run time (the spec is never copied into the repository) and checks an
``execute_kw`` call — field names, value types, selection values, x2many command shapes, fields the table marks
readonly (never written by a client), method names — against it.
The sandbox rejects what it finds, and the tests check the connector's recorded calls with it directly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

SPEC_FILE = "odoo/account-move-fields.md"
# Section heading → model name.
_SECTION = re.compile(r"^##\s+([a-z_.]+)\b")
# Fields every Odoo model has (the ORM's automatic and log-access columns): readable and searchable,
# never written by a client.
MAGIC_FIELDS = {"id", "display_name", "create_date", "create_uid", "write_date", "write_uid"}
# The ORM's own methods every model answers (odoo/models.py); a model's business methods are the ones its section
# names in backticks (``action_post``, ``action_create_payments`` …).
ORM_METHODS = {"create", "write", "read", "search_read", "search", "search_count", "fields_get", "name_search", "unlink"}
# Public methods of account_move.py the table does not name: the invoice widget's "Add" of an outstanding credit.
PUBLIC_METHODS = {"account.move": {"js_assign_outstanding_line"}}
_METHOD = re.compile(r"`([a-z_][a-z0-9_]*)`")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str  # selection, many2one, many2many, one2many, char, text, html, date, monetary, float, json, boolean
    selection: tuple[str, ...] = ()
    comodel: str | None = None
    readonly: bool = False  # "readonly" in the table's Req column: Odoo sets it, a client never writes it


@dataclass
class FieldTable:
    models: dict[str, dict[str, FieldSpec]] = field(default_factory=dict)
    methods: dict[str, set[str]] = field(default_factory=dict)  # per model: what its section names in backticks

    @classmethod
    def from_markdown(cls, text: str) -> "FieldTable":
        table = cls()
        model = None
        for raw in text.splitlines():
            heading = _SECTION.match(raw)
            if heading:
                model = heading.group(1)
                table.models.setdefault(model, {})
                continue
            if model is not None and not raw.startswith("|"):
                table.methods.setdefault(model, set()).update(_METHOD.findall(raw))
            if model is None or not raw.startswith("|") or raw.startswith("|---") or raw.startswith("| Field"):
                continue
            cells = [c.strip() for c in raw.strip().strip("|").split("|")]
            if len(cells) < 2:
                continue
            names = [n.strip("` ") for n in re.split(r"\s*/\s*", cells[0])]
            types = [t.strip() for t in re.split(r"\s+/\s+", cells[1])]
            readonly = len(cells) > 2 and "readonly" in cells[2]
            for index, name in enumerate(names):
                type_text = types[index] if len(types) == len(names) else cells[1]
                if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                    table.models[model][name] = _field_spec(name, type_text, readonly)
        return table

    @classmethod
    def load(cls, specs_dir: str | Path | None = None) -> "FieldTable | None":
        """The table from the specs directory, or None when it is not available."""
        base = Path(specs_dir or os.environ.get("LEDGERWIRE_SPECS_DIR") or
                    Path(__file__).resolve().parents[3] / "shared" / "specs")
        path = base / SPEC_FILE
        return cls.from_markdown(path.read_text()) if path.is_file() else None

    # -- validation --
    def check_vals(self, model: str, vals: Any, where: str = "") -> list[str]:
        """Problems with a create/write ``vals`` dict for ``model`` (empty list = valid)."""
        fields = self.models.get(model)
        if fields is None:
            return []  # a model the table does not describe (res.partner …): not checked here
        if not isinstance(vals, dict):
            return [f"{where or model}: values must be a struct, got {type(vals).__name__}"]
        problems = []
        for name, value in vals.items():
            spec = fields.get(name)
            if spec is None:
                problems.append(f"{where or model}: unknown field {name!r} on {model}")
                continue
            if spec.readonly:
                problems.append(f"{where or model}.{name}: readonly on {model} (Odoo sets it; a client never writes it)")
            problems += self._check_value(model, spec, value, f"{where or model}.{name}")
        return problems

    def check_field_names(self, model: str, names: Any, where: str = "") -> list[str]:
        fields = self.models.get(model)
        if fields is None:
            return []
        return [f"{where or model}: unknown field {n!r} on {model}" for n in names or []
                if n.split(".")[0] not in fields and n not in MAGIC_FIELDS]

    def check_domain(self, model: str, domain: Any, where: str = "") -> list[str]:
        problems = []
        for term in domain or []:
            if isinstance(term, str):
                if term not in ("&", "|", "!"):
                    problems.append(f"{where}: bad domain operator {term!r}")
                continue
            if not isinstance(term, (list, tuple)) or len(term) != 3:
                problems.append(f"{where}: bad domain term {term!r}")
                continue
            problems += self.check_field_names(model, [term[0]], where)
            spec = self.models.get(model, {}).get(term[0])
            if spec and spec.type == "selection" and term[1] in ("=", "!=") and term[2] not in spec.selection:
                problems.append(f"{where}: {term[2]!r} is not a value of {model}.{term[0]}")
        return problems

    def check_call(self, model: str, method: str, args: list, kwargs: dict) -> list[str]:
        """Problems with one ``execute_kw`` call on a model the table describes."""
        where = f"{model}.{method}"
        if model in self.models and method not in ORM_METHODS | self.methods.get(model, set()) | \
                PUBLIC_METHODS.get(model, set()):
            return [f"{where}: {model} has no method {method!r}"]
        if method == "create":
            records = args[0] if args else None
            records = records if isinstance(records, list) else [records]
            return [p for vals in records for p in self.check_vals(model, vals, where)]
        if method == "write":
            return self.check_vals(model, args[1] if len(args) > 1 else None, where)
        if method in ("search_read", "search", "search_count"):
            problems = self.check_domain(model, args[0] if args else kwargs.get("domain"), where)
            return problems + self.check_field_names(model, kwargs.get("fields"), where)
        if method == "read":
            return self.check_field_names(model, args[1] if len(args) > 1 else kwargs.get("fields"), where)
        return []

    def _check_value(self, model: str, spec: FieldSpec, value: Any, where: str) -> list[str]:
        t = spec.type
        if value is False and t not in ("boolean", "one2many", "many2many"):
            return []  # False clears a field in Odoo
        if t == "selection":
            return [] if value in spec.selection else [f"{where}: {value!r} is not one of {list(spec.selection)}"]
        if t == "many2one":
            return [] if _is_int(value) else [f"{where}: many2one takes an id (int), got {value!r}"]
        if t in ("char", "text", "html"):
            return [] if isinstance(value, str) else [f"{where}: {t} takes a string, got {type(value).__name__}"]
        if t == "date":
            ok = isinstance(value, str) and _is_iso_date(value)
            return [] if ok else [f"{where}: date takes 'YYYY-MM-DD', got {value!r}"]
        if t in ("monetary", "float"):
            ok = isinstance(value, (Decimal, int)) and not isinstance(value, bool)
            return [] if ok else [f"{where}: {t} takes a number (double), got {type(value).__name__}"]
        if t == "boolean":
            return [] if isinstance(value, bool) else [f"{where}: boolean takes true/false, got {value!r}"]
        if t == "json":
            return [] if isinstance(value, dict) else [f"{where}: json takes a struct, got {type(value).__name__}"]
        if t in ("one2many", "many2many"):
            return self._check_commands(spec, value, where)
        return []

    def _check_commands(self, spec: FieldSpec, value: Any, where: str) -> list[str]:
        if not isinstance(value, list):
            return [f"{where}: {spec.type} takes a list of commands, got {type(value).__name__}"]
        problems = []
        for cmd in value:
            if not isinstance(cmd, (list, tuple)) or not cmd or cmd[0] not in range(7):
                problems.append(f"{where}: bad x2many command {cmd!r}")
                continue
            code = cmd[0]
            shape_ok = {0: len(cmd) == 3, 1: len(cmd) == 3, 2: len(cmd) in (2, 3), 3: len(cmd) in (2, 3),
                        4: len(cmd) in (2, 3), 5: len(cmd) in (1, 3), 6: len(cmd) == 3}[code]
            if not shape_ok:
                problems.append(f"{where}: command {cmd!r} has the wrong shape")
                continue
            if code == 6 and not (isinstance(cmd[2], list) and all(_is_int(i) for i in cmd[2])):
                problems.append(f"{where}: (6, 0, ids) takes a list of ids, got {cmd[2]!r}")
            if code in (0, 1) and spec.comodel in self.models:
                problems += self.check_vals(spec.comodel, cmd[2], f"{where}[{code}]")
        return problems


def _field_spec(name: str, type_text: str, readonly: bool = False) -> FieldSpec:
    text = type_text.strip()
    if readonly:
        return FieldSpec(**{**_field_spec(name, text).__dict__, "readonly": True})
    if text.startswith("selection"):
        values = text.split(":", 1)[1] if ":" in text else ""
        values = re.sub(r"\(\+([^)]*)\)", r", \1", values)  # "(+ tax, cogs …)": more values
        values = re.sub(r"\([^)]*\)", "", values)  # "(19)": a version note
        words = (re.match(r"\s*([a-z_]+)", v) for v in values.split(","))
        return FieldSpec(name, "selection", tuple(w.group(1) for w in words if w))
    match = re.match(r"(many2one|many2many|one2many)\s+([a-z_.]+)", text)
    if match:
        return FieldSpec(name, match.group(1), comodel=match.group(2))
    first = re.split(r"[\s/(]", text, maxsplit=1)[0]
    return FieldSpec(name, first)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_iso_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10
