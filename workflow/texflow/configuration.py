"""The run configuration and dataset files: strict YAML, one schema, its defaults applied.

The JSON schemas in ``workflow/schemas/`` are the one place where a parameter, its type, its
default and its reason are written. This module

- reads YAML with :func:`load_yaml`, which refuses a mapping key given twice (PyYAML keeps the
  last one silently, so a misplaced line would overwrite another key's definition);
- resolves a schema and the files its ``$ref`` names into one document (:func:`load_schema`);
  validated through ``$ref`` to a file that declares its own ``$schema``, jsonschema switches to
  the plain validator of that draft, which does not fill defaults;
- validates and fills every default (:func:`validate`): after it, each stage section of the run
  configuration holds every key of its schema.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration, dataset or schema file that cannot be used; names the file and the key."""


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that raises on a mapping key given twice."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' merges are PyYAML's to resolve
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML reports it below
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (line {first} and again line {line})",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | PathLike) -> Any:
    """The YAML document in `path`; :class:`ConfigError` naming the file for a duplicate key or
    invalid YAML."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.constructor.ConstructorError as error:
        raise ConfigError(f"{path}: {error.problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None


def _inline_refs(node: Any, base: Path) -> Any:
    """`node` with every ``$ref`` to another file replaced by that file's (resolved) schema."""
    if isinstance(node, list):
        return [_inline_refs(item, base) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        target = (base / ref).resolve()
        referenced = load_yaml(target)
        if not isinstance(referenced, dict):
            raise ConfigError(f"{target} (named by $ref in {base}) must hold a schema mapping")
        if "$defs" in referenced:  # its '#/...' references would point into the outer schema
            raise ConfigError(f"{target}: a schema named by $ref cannot have $defs here")
        referenced = _inline_refs(referenced, target.parent)
        for key in ("$schema", "$id"):
            referenced.pop(key, None)
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return {**referenced, **_inline_refs(siblings, base)}
    return {key: _inline_refs(value, base) for key, value in node.items()}


def load_schema(path: str | PathLike) -> dict:
    """The JSON schema in `path` with the files its ``$ref`` names inlined (one document).

    A ``$ref`` beside ``default: {}`` (as each stage section of the run schema has) makes a
    missing section an empty one, whose keys then get their own defaults.
    """
    path = Path(path)
    schema = load_yaml(path)
    if not isinstance(schema, dict):
        raise ConfigError(f"{path} must hold a schema mapping")
    return _inline_refs(schema, path.parent)


def _default_filling_validator():
    """Draft 2020-12 validator that fills each property's default (jsonschema FAQ pattern),
    with a copy of the default so that no two configs share one list or mapping."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": set_defaults})


def _where(error) -> str:
    path = "".join(f"[{part!r}]" for part in error.absolute_path)
    return path or "(top level)"


def validate(data: dict, schema: Mapping | str | PathLike, *, what: str) -> dict:
    """Validate `data` against `schema` (a mapping, or a schema file for :func:`load_schema`),
    filling every default in place; return `data`.

    Raises :class:`ConfigError` "`what` is not valid: at key [...]: problem" for the first
    (most relevant) problem.
    """
    from jsonschema.exceptions import best_match

    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    validator = _default_filling_validator()(schema)
    error = best_match(validator.iter_errors(data))
    if error is not None:
        raise ConfigError(f"{what} is not valid: at key {_where(error)}: {error.message}")
    return data


def schema_defaults(schema: Mapping) -> dict:
    """Key -> default of an object schema's properties (keys without a default left out)."""
    return {
        name: sub["default"]
        for name, sub in schema.get("properties", {}).items()
        if isinstance(sub, Mapping) and "default" in sub
    }
