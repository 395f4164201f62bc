"""Helpers for the deploy tests: load CloudFormation/SAM templates, resolve intrinsics, run cfn-lint.

Templates are read with cfn-lint's own YAML loader (it understands the short
``!Ref``/``!Sub``/``!GetAtt`` tags), and a small resolver evaluates the
intrinsic functions the templates use for one set of parameter values, so the
tests compare plain data with the files in ``deploy/``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
FLEET_TEMPLATE = DEPLOY / "cloudformation.yaml"
LAMBDA_TEMPLATE = DEPLOY / "lambda" / "template.yaml"
CDN_TEMPLATE = DEPLOY / "cloudfront.yaml"

_NO_VALUE = object()


def load(path: Path) -> dict:
    """The template as plain dicts and lists (intrinsics in their long ``Fn::`` form)."""
    return _plain(cfn_yaml.load(str(path)))


def _plain(node: Any) -> Any:
    # cfn-lint's nodes are dict/list/str subclasses carrying line numbers; plain ones compare cleanly.
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


class Resolver:
    """Evaluates Ref, Fn::Sub, Fn::If, Fn::GetAtt, Fn::Base64 and Conditions for given parameters.

    ``Ref`` to a resource gives ``<Ref Name>``, ``GetAtt`` gives ``<GetAtt Name.Attr>``:
    placeholders a test can look for, since those values only exist once deployed.
    """

    def __init__(self, template: dict, parameters: Mapping[str, Any] | None = None,
                 pseudo: Mapping[str, str] | None = None) -> None:
        self.template = template
        self.params = {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}
        self.params.update(parameters or {})
        missing = [name for name, value in self.params.items() if value is None]
        if missing:
            raise ValueError(f"parameters without a value: {missing}")
        self.pseudo = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012",
                       "AWS::StackName": "stack", "AWS::URLSuffix": "amazonaws.com", **(pseudo or {})}
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self._conditions[name]

    def resource_exists(self, name: str) -> bool:
        cond = self.template["Resources"][name].get("Condition")
        return cond is None or self.condition(cond)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(v) for v in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            handler = {
                "Ref": self._ref, "Fn::Sub": self._sub, "Fn::If": self._if, "Fn::GetAtt": self._getatt,
                "Fn::Equals": self._equals, "Fn::Not": lambda a: not self.resolve(a[0]),
                "Fn::And": lambda a: all(self.resolve(x) for x in a),
                "Fn::Or": lambda a: any(self.resolve(x) for x in a),
                "Condition": self.condition, "Fn::Base64": self.resolve,
                "Fn::Join": lambda a: a[0].join(str(self.resolve(x)) for x in self.resolve(a[1])),
            }.get(key)
            if handler is not None:
                return handler(arg)
        out = {}
        for key, value in node.items():
            value = self.resolve(value)
            if value is not _NO_VALUE:
                out[key] = value
        return out

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.template["Resources"]:
            return f"<Ref {name}>"
        raise KeyError(f"Ref to unknown {name}")

    def _getatt(self, arg: Any) -> str:
        name, attr = arg.split(".", 1) if isinstance(arg, str) else arg
        if name not in self.template["Resources"]:
            raise KeyError(f"GetAtt of unknown resource {name}")
        return f"<GetAtt {name}.{attr}>"

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        variables = {k: self.resolve(v) for k, v in variables.items()}

        def one(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name:
                return self._getatt(name)
            return str(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def _if(self, arg: list) -> Any:
        return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])

    def _equals(self, arg: list) -> bool:
        a, b = (self.resolve(x) for x in arg)
        return str(a) == str(b)


def cfn_lint(*paths: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run the cfn-lint command line (installed in this venv; it works offline with its bundled specs)."""
    command = Path(sys.executable).with_name("cfn-lint")
    return subprocess.run(
        [str(command), "--include-checks", "I", *extra, "--", *map(str, paths)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
