"""The launch forms of the Jobs page, built from each kind's config dataclass: choices become
selects (or checkboxes for a list), with their help; a field that holds another kind's settings
(the round's `dpo`, `generate`, …) becomes a group of that kind's fields, with any other field
of it as JSON behind an "advanced" toggle. And the way back: a posted form to a config dict."""

from __future__ import annotations

import json

from . import jobs
from .hardware import queue_label
from .runners.base import ConfigError


class FormError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _shown(value) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "" if value is None else str(value)


def _field(described: dict, name: str, posted=None) -> dict:
    """One input: its widget, current value (as posted, else the default) and choices."""
    kind = described["type"]
    choices = described.get("choices")
    default = described["default"]
    field = {"name": name, "label": described["name"].replace("_", " "), "help": described.get("help", ""),
             "type": kind, "id": "f-" + name.replace(".", "-")}
    if kind == "bool":
        field["widget"] = "checkbox"
        field["value"] = (name in posted) if posted is not None else bool(default)
    elif choices and kind.startswith("list"):
        chosen = posted.getlist(name) if posted is not None else list(default or [])
        field["widget"] = "multi"
        field["choices"] = [(value, text, value in chosen) for value, text in choices.items()]
    elif choices:
        current = posted.get(name, default) if posted is not None else default
        field["widget"] = "select"
        field["choices"] = [(value, text, str(value) == str(current)) for value, text in choices.items()]
    else:
        field["widget"] = "number" if kind in ("int", "float") else "text"
        field["step"] = "1" if kind == "int" else "any"
        field["value"] = posted.get(name, _shown(default)) if posted is not None else _shown(default)
    return field


def _group(described: dict, posted=None) -> dict:
    """A field holding another kind's settings: that kind's fields named in the default, and JSON
    for any other field of it."""
    name = described["name"]
    inner = jobs.kinds().get(name)
    defaults = described["default"] or {}
    group = {"widget": "group", "name": name, "label": name.replace("_", " "), "help": described.get("help", ""),
             "id": f"f-{name}", "json_name": f"{name}.json",
             "json": posted.get(f"{name}.json", "{}") if posted is not None else "{}", "fields": [], "others": []}
    if inner is None:
        group["json"] = posted.get(f"{name}.json", json.dumps(defaults)) if posted is not None else json.dumps(
            defaults)
        return group
    for sub in inner.config.describe():
        if sub["name"] in defaults:
            group["fields"].append(_field({**sub, "default": defaults[sub["name"]]}, f"{name}.{sub['name']}", posted))
        else:
            group["others"].append(sub["name"])
    group["kind_label"] = inner.label
    return group


def kind_forms(posted=None, error: str | None = None) -> list[dict]:
    """Every kind's form; the one posted keeps what was typed and shows the error."""
    forms = []
    for kind, spec in jobs.kinds().items():
        mine = posted if posted is not None and posted.get("kind") == kind else None
        fields = [_group(f, mine) if f["type"] == "dict" else _field(f, f["name"], mine)
                  for f in spec.config.describe()]
        forms.append({"kind": kind, "label": spec.label, "fields": fields, "queue": queue_label(spec.queue),
                      "error": error if mine is not None else None})
    return forms


def config_from_post(kind: str, post) -> dict:
    """The config a launch form posted, as a dict for `jobs.launch` (which validates it)."""
    spec = jobs.kinds().get(kind)
    if spec is None:
        return {}
    config: dict = {}
    for described in spec.config.describe():
        name = described["name"]
        if described["type"] == "bool":
            config[name] = name in post
        elif described["type"] == "dict":
            config[name] = _group_value(described, post)
        elif described["type"].startswith("list") and (described.get("choices")):
            config[name] = post.getlist(name)
        elif name in post:
            config[name] = post[name].strip()
    return config


def _group_value(described: dict, post) -> dict:
    name = described["name"]
    raw = post.get(f"{name}.json", "").strip() or "{}"
    try:
        extra = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FormError(f"Advanced settings of {name}: not valid JSON ({exc.msg} at character {exc.pos}).") from None
    if not isinstance(extra, dict):
        raise FormError(f"Advanced settings of {name}: write a JSON object of fields, like {{\"max_steps\": 10}}.")
    inner = jobs.kinds().get(name)
    if inner is None:
        return extra
    values: dict = {}
    for sub in inner.config.describe():
        key = f"{name}.{sub['name']}"
        if sub["name"] not in (described["default"] or {}):
            continue
        if sub["type"] == "bool":
            values[sub["name"]] = key in post
        elif sub["type"].startswith("list") and sub.get("choices"):
            values[sub["name"]] = post.getlist(key)
        elif key in post:
            values[sub["name"]] = post[key].strip()
    values.update(extra)  # the advanced JSON wins over the fields above
    try:  # typed as the step's config types them, so the stored config reads as numbers
        parsed = inner.config.from_dict(values)
    except ConfigError:
        return values  # launch names the field that is wrong
    return {key: getattr(parsed, key) for key in values}
