"""The bucket side of the product: website configuration and public-read policy.

Built from ``deploy/routing_rules.xml`` and ``deploy/bucket_policy.json`` so
that the files in ``deploy/`` are the single source for real AWS (``resize-server
setup-bucket``) and for the local stack.  The S3 client is passed in.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# deploy/ beside the package in a checkout, or installed as data files by pip.
_DEPLOY_DIRS = (Path(__file__).resolve().parent.parent / "deploy", Path(sys.prefix) / "share" / "resize-server" / "deploy")


def deploy_dir() -> Path | None:
    """The folder holding routing_rules.xml, bucket_policy.json and policy.xml, if there is one."""
    return next((d for d in _DEPLOY_DIRS if (d / "policy.xml").exists()), None)

_CONDITION_FIELDS = ("KeyPrefixEquals", "HttpErrorCodeReturnedEquals")
_REDIRECT_FIELDS = ("Protocol", "HostName", "ReplaceKeyPrefixWith", "ReplaceKeyWith", "HttpRedirectCode")


def _strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def routing_rules(xml_text: str, host_name: str | None = None, protocol: str | None = None) -> list[dict]:
    """Parse RoutingRules XML into boto3's shape, optionally pointing every redirect at ``host_name``."""
    root = ET.fromstring(xml_text)
    if _strip_ns(root.tag) != "RoutingRules":
        raise ValueError(f"expected <RoutingRules>, found <{_strip_ns(root.tag)}>")
    rules = []
    for rule_el in root:
        if _strip_ns(rule_el.tag) != "RoutingRule":
            continue
        rule: dict = {}
        for part in rule_el:
            name = _strip_ns(part.tag)
            allowed = {"Condition": _CONDITION_FIELDS, "Redirect": _REDIRECT_FIELDS}.get(name)
            if allowed is None:
                raise ValueError(f"unknown element <{name}> in RoutingRule")
            values = {}
            for field in part:
                field_name = _strip_ns(field.tag)
                if field_name not in allowed:
                    raise ValueError(f"unknown element <{field_name}> in {name}")
                values[field_name] = (field.text or "").strip()
            rule[name] = values
        if "Redirect" not in rule:
            raise ValueError("a RoutingRule needs a <Redirect>")
        if host_name:
            rule["Redirect"]["HostName"] = host_name
        if protocol:
            rule["Redirect"]["Protocol"] = protocol
        rules.append(rule)
    if not rules:
        raise ValueError("no RoutingRule found")
    return rules


def website_configuration(xml_text: str, host_name: str | None = None, protocol: str | None = None) -> dict:
    return {
        "IndexDocument": {"Suffix": "index.html"},
        "RoutingRules": routing_rules(xml_text, host_name, protocol),
    }


def bucket_policy(json_text: str, bucket: str) -> str:
    """The public-read policy with its resources pointed at ``bucket``; refuses anything beyond GetObject."""
    policy = json.loads(json_text)
    for statement in policy.get("Statement", []):
        actions = statement.get("Action")
        actions = [actions] if isinstance(actions, str) else list(actions or [])
        if statement.get("Effect") == "Allow" and actions != ["s3:GetObject"]:
            raise ValueError(f"bucket policy may only allow s3:GetObject, found {actions}")
        resources = statement.get("Resource")
        resources = [resources] if isinstance(resources, str) else list(resources or [])
        fixed = []
        for resource in resources:
            prefix = "arn:aws:s3:::"
            if not resource.startswith(prefix) or "/" not in resource:
                raise ValueError(f"bucket policy resource {resource!r} is not an object ARN")
            fixed.append(prefix + bucket + "/" + resource[len(prefix):].split("/", 1)[1])
        statement["Resource"] = fixed[0] if len(fixed) == 1 else fixed
    return json.dumps(policy)


def read_deploy_file(name: str) -> str:
    folder = deploy_dir()
    if folder is None:
        raise FileNotFoundError(f"deploy/{name} not found (looked in {', '.join(map(str, _DEPLOY_DIRS))})")
    return (folder / name).read_text()
