"""Loading a policy bundle (a folder or a {path: text} mapping) and validating it.

Every schema error names the file, the line and the field, so that a legal editor can
find it without reading Python.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gateway.policy.schema import ContentPolicy, Licence, ModelRegistry, Uses

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class PolicyIssue:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '<root>'}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "path": self.path, "message": self.message}


class PolicyError(Exception):
    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = issues
        super().__init__("invalid policy bundle:\n" + "\n".join(f"  {i}" for i in issues))


@dataclass(frozen=True)
class PolicyBundle:
    version: str  # sha256 of the bundle's files
    files: Mapping[str, str]
    content: ContentPolicy
    licences: Mapping[str, Licence]
    models: ModelRegistry
    uses: Uses


def read_bundle_files(directory: Path) -> dict[str, str]:
    """All YAML files of a bundle folder, keyed by their POSIX path inside it."""
    if not directory.is_dir():
        raise PolicyError([PolicyIssue(str(directory), None, "", "policy folder does not exist")])
    files: dict[str, str] = {}
    for path in sorted(directory.rglob("*.yaml")):
        files[path.relative_to(directory).as_posix()] = path.read_text(encoding="utf-8")
    return files


def bundle_version(files: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        body = files[name].encode("utf-8")
        digest.update(f"{name}\0{len(body)}\0".encode())
        digest.update(body)
    return digest.hexdigest()


def load_bundle(directory: Path) -> PolicyBundle:
    return parse_bundle(read_bundle_files(directory))


def parse_bundle(files: Mapping[str, str]) -> PolicyBundle:
    issues: list[PolicyIssue] = []
    content = _parse(files, "content.yaml", ContentPolicy, issues)
    models = _parse(files, "models.yaml", ModelRegistry, issues)
    uses = _parse(files, "uses.yaml", Uses, issues)
    licences: dict[str, Licence] = {}
    for name in sorted(n for n in files if n.startswith("licences/")):
        lic = _parse(files, name, Licence, issues)
        if lic is None:
            continue
        if lic.id in licences:
            issues.append(PolicyIssue(name, _line(files[name], ("id",)), "id", "duplicate id"))
        licences[lic.id] = lic
    if models is not None:
        for model_id, entry in models.models.items():
            if entry.licence not in licences:
                issues.append(
                    PolicyIssue(
                        "models.yaml",
                        _line(files["models.yaml"], ("models", model_id, "licence")),
                        f"models.{model_id}.licence",
                        f"no licence file declares id {entry.licence!r}",
                    )
                )
    if issues or content is None or models is None or uses is None:
        raise PolicyError(issues)
    return PolicyBundle(
        version=bundle_version(files),
        files=dict(files),
        content=content,
        licences=licences,
        models=models,
        uses=uses,
    )


def _parse(
    files: Mapping[str, str], name: str, model: type[M], issues: list[PolicyIssue]
) -> M | None:
    text = files.get(name)
    if text is None:
        issues.append(PolicyIssue(name, None, "", "required file is missing"))
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        issues.append(PolicyIssue(name, line, "", f"not valid YAML: {exc}"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            issues.append(
                PolicyIssue(
                    name, _line(text, loc), ".".join(str(p) for p in loc), _message(err["msg"])
                )
            )
        return None


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _line(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    return node_line(compose_yaml(text), loc)


def compose_yaml(text: str) -> yaml.Node | None:
    """The YAML node tree of ``text`` (None if it does not parse): compose once, then ask
    :func:`node_line` for as many locations as needed."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present
    try:
        return yaml.compose(text, Loader=loader)
    except yaml.YAMLError:
        return None


def node_line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the node at ``loc`` under ``node`` (or of its nearest existing parent)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
