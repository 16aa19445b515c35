"""A renderer for the small subset of Helm's Go-template syntax the chart under
deploy/helm/inclavare-containers keeps to (no helm binary exists on this machine):

    {{ VALUE }}                   .Values.a.b, .Release.Name, .Release.Namespace,
                                  .Chart.Name, .Chart.Version, .Chart.AppVersion, "text", 123
    {{ VALUE | FUNCTION ... }}    quote, toYaml, nindent N, indent N, default VALUE
    {{ toYaml VALUE | ... }}      (and `quote VALUE`): the same as VALUE | toYaml
    {{ if CONDITION }} ... {{ else }} ... {{ end }}
                                  CONDITION: a pipeline (true unless empty, zero, false or
                                  missing), `not VALUE`, or `eq VALUE VALUE`
    {{/* comment */}}
    {{- and -}}                   remove the white space before or after the action

Anything else (range, with, define, include, variables, other functions) is an error naming
the template and the action, so the chart cannot drift outside what this renderer, and
therefore the test suite, understands.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
FUNCTIONS = ("quote", "toYaml", "nindent", "indent", "default")


class TemplateError(Exception):
    pass


def _tokens(text: str) -> list[str]:
    return re.findall(r'"(?:[^"\\]|\\.)*"|\S+', text)


class Renderer:
    def __init__(self, context: dict[str, Any], name: str) -> None:
        self.context = context
        self.name = name

    def fail(self, action: str, why: str) -> TemplateError:
        return TemplateError(f"{self.name}: {{{{ {action} }}}}: {why}")

    def value(self, token: str, action: str) -> Any:
        if token.startswith('"'):
            return bytes(token[1:-1], "utf-8").decode("unicode_escape")
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        if token in ("true", "false"):
            return token == "true"
        if not re.fullmatch(r"(\.[A-Za-z_][A-Za-z0-9_]*)+", token):
            raise self.fail(action, f"{token!r} is outside the supported subset")
        parts = token[1:].split(".")
        if parts[0] not in ("Values", "Release", "Chart"):
            raise self.fail(action, f"{token!r} is outside the supported subset")
        node: Any = self.context
        for part in parts:
            if not isinstance(node, dict):
                raise self.fail(action, f"{token}: {part} of a non-map")
            node = node.get(part)
        return node

    def pipeline(self, text: str, action: str) -> Any:
        stages = [stage.strip() for stage in text.split("|")]
        tokens = _tokens(stages[0])
        if len(tokens) == 2 and tokens[0] in ("toYaml", "quote"):
            # `toYaml X` is `X | toYaml`
            stages[0:1] = [tokens[1], tokens[0]]
            tokens = tokens[1:]
        if len(tokens) != 1:
            raise self.fail(action, f"{stages[0]!r} is outside the supported subset")
        result = self.value(tokens[0], action)
        for stage in stages[1:]:
            words = _tokens(stage)
            function, args = words[0], words[1:]
            if function not in FUNCTIONS:
                raise self.fail(action, f"function {function!r} is outside the supported subset")
            if function == "quote" and not args:
                text_value = "" if result is None else str(result)
                result = '"' + text_value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            elif function == "toYaml" and not args:
                result = (
                    ""
                    if result is None
                    else yaml.safe_dump(result, default_flow_style=False, sort_keys=True).rstrip(
                        "\n"
                    )
                )
            elif function in ("nindent", "indent") and len(args) == 1 and args[0].isdigit():
                pad = " " * int(args[0])
                body = "\n".join(pad + line if line else line for line in str(result).split("\n"))
                result = ("\n" if function == "nindent" else "") + body
            elif function == "default" and len(args) == 1:
                if not _truthy(result):
                    result = self.value(args[0], action)
            else:
                raise self.fail(action, f"bad arguments to {function}")
        return result

    def condition(self, text: str, action: str) -> bool:
        words = _tokens(text)
        if words and words[0] == "not" and len(words) == 2:
            return not _truthy(self.value(words[1], action))
        if words and words[0] == "eq" and len(words) == 3:
            return bool(self.value(words[1], action) == self.value(words[2], action))
        return _truthy(self.pipeline(text, action))

    def render(self, template: str) -> str:
        # Literal texts and actions alternate: texts[i] comes before actions[i].
        texts: list[str] = []
        actions: list[str] = []
        position = 0
        trim_next = False
        for match in ACTION.finditer(template):
            literal = template[position : match.start()]
            if trim_next:
                literal = literal.lstrip()
            if match.group(1):
                literal = literal.rstrip()
            texts.append(literal)
            actions.append(match.group(2))
            trim_next = bool(match.group(3))
            position = match.end()
        tail = template[position:]
        if trim_next:
            tail = tail.lstrip()
        output: list[str] = []
        # A stack of (rendering this branch, some branch already taken) for if/else/end.
        stack: list[tuple[bool, bool]] = []
        active = True
        for literal, action in zip(texts, actions, strict=True):
            if active:
                output.append(literal)
            if action.startswith("/*") and action.endswith("*/"):
                continue
            words = _tokens(action)
            keyword = words[0] if words else ""
            if keyword == "if":
                taken = active and self.condition(action[2:].strip(), action)
                stack.append((active, taken))
                active = taken
            elif keyword == "else" and len(words) == 1:
                if not stack:
                    raise self.fail(action, "else without if")
                outer, taken = stack[-1]
                active = outer and not taken
                stack[-1] = (outer, True)
            elif keyword == "end" and len(words) == 1:
                if not stack:
                    raise self.fail(action, "end without if")
                active = stack.pop()[0]
            elif keyword in ("range", "with", "define", "include", "template", "block") or (
                keyword.startswith("$")
            ):
                raise self.fail(action, f"{keyword!r} is outside the supported subset")
            elif active:
                result = self.pipeline(action, action)
                output.append("" if result is None else _text(result))
        if stack:
            raise TemplateError(f"{self.name}: an if without its end")
        if active:
            output.append(tail)
        return "".join(output)


def _truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", [], {})


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def merge(base: Any, override: Any) -> Any:
    """User values over the chart's defaults as Helm coalesces them: maps merge key by key,
    and a null removes the default's key."""
    if isinstance(base, dict) and isinstance(override, dict):
        result = dict(base)
        for key, value in override.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merge(base.get(key), value)
        return result
    return override


def render_chart(
    chart: Path, values: dict[str, Any] | None = None, namespace: str = "default"
) -> dict[str, str]:
    """The rendered text of each template of the chart, by file name."""
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    context = {
        "Values": merge(defaults, values or {}),
        "Release": {"Name": "inclavare", "Namespace": namespace},
        "Chart": {
            "Name": metadata["name"],
            "Version": metadata["version"],
            "AppVersion": metadata.get("appVersion", ""),
        },
    }
    rendered = {}
    for template in sorted((chart / "templates").iterdir()):
        if template.suffix not in (".yaml", ".tpl", ".txt"):
            continue
        text = Renderer(context, template.name).render(template.read_text())
        rendered[template.name] = text
    return rendered
