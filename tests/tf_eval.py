"""Terraform's expressions, evaluated offline: what each resource block of infra/terraform will create.

The IAM checks and the mutation suite need every block's resolved values dozens of times; a Terraform plan
(tests/test_terraform_plan.py, on stand-in providers) takes seconds each. So this module evaluates the HCL
expressions python-hcl2 leaves as text (`for` expressions, `merge(...)...`, conditionals, templates, heredocs,
`each.key`/`each.value`) with the variables of terraform.tfvars.example and the declared defaults, and
Terraform's plan checks it (tests/tf_standin/agree.py). A value only known after apply (an attribute of a
resource) stays a `Ref` naming it, e.g. `google_service_account.fn["add_tag"].member`, so a grant resolves to
the very resource instance it names.
"""

from __future__ import annotations

import base64
import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2


@dataclass(frozen=True)
class Ref:
    """An attribute known only after apply: resource (or data source) address, instance key, attribute path."""

    address: str
    key: str | int | None = None
    attrs: tuple[str, ...] = ()

    def __str__(self) -> str:
        key = "" if self.key is None else f"[{json.dumps(self.key)}]"
        return "${" + self.address + key + "".join(f".{a}" for a in self.attrs) + "}"


class Unknown:
    """A value this evaluator does not compute (it is never needed to resolve a grant)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = Unknown()
TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>\")|(?P<ident>[A-Za-z_][A-Za-z0-9_-]*)"
    r"|(?P<op>==|!=|<=|>=|&&|\|\||=>|\.\.\.|\.\*|[-+*/%()\[\]{},.:?=!<>]))"
)


def _read_string(text: str, start: int) -> tuple[str, int]:
    """The raw body of a quoted string starting after its opening quote (templates may nest quotes)."""
    i, depth = start, 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if depth == 0 and c == '"':
            return text[start:i], i + 1
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if depth and c == '"':
            _, i = _read_string(text, i + 1)
            continue
        if depth and c == "}":
            depth -= 1
        i += 1
    raise SyntaxError(f"unterminated string in {text!r}")


def tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    i = 0
    while i < len(text):
        if text[i:].strip() == "":
            break
        m = TOKEN.match(text, i)
        if m is None:
            raise SyntaxError(f"cannot read {text[i:]!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind == "str":
            body, i = _read_string(text, m.end())
            tokens.append(("str", body))
            continue
        tokens.append((kind, m.group(kind)))
        i = m.end()
    tokens.append(("end", None))
    return tokens


class Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, Any]:
        return self.tokens[self.i + offset]

    def take(self, value: str | None = None) -> tuple[str, Any]:
        token = self.tokens[self.i]
        if value is not None and token[1] != value:
            raise SyntaxError(f"expected {value!r}, found {token[1]!r}")
        self.i += 1
        return token

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] in ("op", "ident"):
            self.i += 1
            return True
        return False

    def parse(self) -> Any:
        node = self.expr()
        if self.peek()[0] != "end":
            raise SyntaxError(f"unexpected {self.peek()[1]!r}")
        return node

    def expr(self) -> Any:
        cond = self.binary(0)
        if self.accept("?"):
            yes = self.expr()
            self.take(":")
            return ("cond", cond, yes, self.expr())
        return cond

    LEVELS = (("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Any:
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in self.LEVELS[level]:
            op = self.take()[1]
            left = ("bin", op, left, self.binary(level + 1))
        return left

    def unary(self) -> Any:
        if self.peek() in (("op", "!"), ("op", "-")):
            return ("un", self.take()[1], self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: Any) -> Any:
        while True:
            if self.peek() == ("op", ".") and self.peek(1)[0] in ("ident", "num"):
                self.take()
                node = ("attr", node, self.take()[1])
            elif self.peek() == ("op", "[") and self.peek(1) == ("op", "*"):
                self.take(), self.take(), self.take("]")
                node = ("splat", node)
            elif self.peek() == ("op", "["):
                self.take()
                index = self.expr()
                self.take("]")
                node = ("index", node, index)
            else:
                return node

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "num":
            return ("lit", float(value) if "." in value else int(value))
        if kind == "str":
            return ("tmpl", template_parts(value))
        if kind == "ident":
            if value in ("true", "false"):
                return ("lit", value == "true")
            if value == "null":
                return ("lit", None)
            if self.peek() == ("op", "("):
                self.take()
                args, expand = [], False
                while not self.accept(")"):
                    args.append(self.expr())
                    expand = self.accept("...")
                    self.accept(",")
                return ("call", value, args, expand)
            return ("name", value)
        if value == "(":
            node = self.expr()
            self.take(")")
            return node
        if value == "[":
            if self.peek() == ("ident", "for"):
                return self.for_expr("]")
            items = []
            while not self.accept("]"):
                items.append(self.expr())
                self.accept(",")
            return ("tuple", items)
        if value == "{":
            if self.peek() == ("ident", "for"):
                return self.for_expr("}")
            pairs = []
            while not self.accept("}"):
                if self.peek()[0] == "ident" and self.peek(1)[1] in ("=", ":"):
                    key: Any = ("lit", self.take()[1])
                else:
                    key = self.expr()
                self.take("=") if self.peek()[1] == "=" else self.take(":")
                pairs.append((key, self.expr()))
                self.accept(",")
            return ("object", pairs)
        raise SyntaxError(f"unexpected {value!r}")

    def for_expr(self, close: str) -> Any:
        self.take("for")
        names = [self.take()[1]]
        if self.accept(","):
            names.append(self.take()[1])
        self.take("in")
        collection = self.expr()
        self.take(":")
        first = self.expr()
        second = self.expr() if close == "}" and self.accept("=>") else None
        cond = self.expr() if self.accept("if") else None
        self.take(close)
        return ("for", close, names, collection, first, second, cond)


def template_parts(raw: str, quoted: bool = True) -> list[Any]:
    """A quoted string's (or a heredoc's) literal pieces and its `${...}` interpolations (parsed)."""
    parts: list[Any] = []
    i, literal = 0, ""
    while i < len(raw):
        if raw.startswith("$${", i):
            literal += "${"
            i += 3
        elif raw.startswith("${", i):
            depth, j = 1, i + 2
            while depth:
                if raw[j] == '"':
                    _, j = _read_string(raw, j + 1)
                    continue
                depth += {"{": 1, "}": -1}.get(raw[j], 0)
                j += 1
            parts.append(literal)
            literal = ""
            parts.append(Parser(raw[i + 2 : j - 1]).parse())
            i = j
        elif quoted and raw[i] == "\\" and i + 1 < len(raw):
            literal += {"n": "\n", "t": "\t"}.get(raw[i + 1], raw[i + 1])
            i += 2
        else:
            literal += raw[i]
            i += 1
    parts.append(literal)
    return parts


HEREDOC = re.compile(r"^<<(-?)([A-Za-z_]+)\n(.*)\n\s*\2\s*$", re.DOTALL)


def _heredoc(raw: str) -> str:
    """A heredoc's text as Terraform reads it: `<<-` strips the lines' common indentation; one final newline."""
    match = HEREDOC.match(raw)
    assert match is not None
    lines = match.group(3).split("\n")
    if match.group(1):
        indent = min((len(line) - len(line.lstrip(" ")) for line in lines if line.strip()), default=0)
        lines = [line[indent:] for line in lines]
    return "\n".join(lines) + "\n"


def _jsonencode(value: Any) -> str:
    """Terraform's jsonencode: object keys sorted, no spaces, `<`, `>`, `&` and U+2028/9 escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def _set(values: Any) -> list[Any]:
    unique: list[Any] = []
    for v in values:
        if v not in unique:
            unique.append(v)
    return sorted(unique, key=str)


def _merge(*maps: Any) -> Any:
    out: dict[str, Any] = {}
    for m in maps:
        if isinstance(m, Unknown):
            return UNKNOWN
        out.update(m)
    return out


def _flatten(items: Any) -> list[Any]:
    out: list[Any] = []
    for item in items:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


@dataclass
class Config:
    """One configuration directory: its blocks, variables (tfvars example plus defaults) and locals."""

    directory: Path
    tfvars: dict[str, Any] = field(default_factory=dict)
    blocks: dict[str, list[Any]] = field(default_factory=dict)
    local_exprs: dict[str, Any] = field(default_factory=dict)
    local_values: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> Config:
        config = cls(directory)
        for path in sorted(directory.glob("*.tf")):
            with path.open() as handle:
                for block, items in hcl2.load(handle).items():
                    config.blocks.setdefault(block, []).extend(items)
        for block in config.blocks.get("locals", []):
            for name, value in block.items():
                if not name.startswith("__"):
                    config.local_exprs[name.strip('"')] = value
        example = directory / "terraform.tfvars.example"
        if example.exists():
            with example.open() as handle:
                given = hcl2.load(handle)
            config.tfvars = {k: config.value(v, {}) for k, v in given.items() if not k.startswith("__")}
        for block in config.blocks.get("variable", []):
            for raw, spec in block.items():
                name = raw.strip('"')
                default = config.value(spec["default"], {}) if "default" in spec else None
                value = config.tfvars.get(name, default)
                kind = config.value(spec.get("type", "${any}"), {"__types__": True})
                config.variables[name] = _apply_type(kind, value)
        return config

    # --- resource blocks ---
    def resource_blocks(self, section: str = "resource") -> dict[str, dict[str, Any]]:
        """{"type.name": body} for every resource (or data) block."""
        out: dict[str, dict[str, Any]] = {}
        for group in self.blocks.get(section, []):
            for kind, instances in group.items():
                for name, body in instances.items():
                    if not kind.startswith("__") and isinstance(body, dict):
                        out[f"{kind.strip(chr(34))}.{name.strip(chr(34))}"] = body
        return out

    def instances(self, body: dict[str, Any]) -> dict[str | int | None, dict[str, Any]]:
        """Each instance's scope: {key: {"each": {"key", "value"}}} after for_each (or count)."""
        if "for_each" in body:
            collection = self.value(body["for_each"], {})
            if isinstance(collection, dict):
                return {k: {"each": {"key": k, "value": v}} for k, v in collection.items()}
            return {v: {"each": {"key": v, "value": v}} for v in collection}
        if "count" in body:
            return {i: {"count": {"index": i}} for i in range(int(self.value(body["count"], {})))}
        return {None: {}}

    # --- values ---
    def value(self, raw: Any, scope: dict[str, Any]) -> Any:
        """python-hcl2's rendering of a value (quoted template, ${expression}, list, object, block list)."""
        if isinstance(raw, str):
            if raw.startswith("${") and raw.endswith("}") and _single(raw):
                return self.eval(Parser(raw[2:-1]).parse(), scope)
            if HEREDOC.match(raw[1:-1]):  # python-hcl2 quotes a heredoc whole
                return self.eval(("tmpl", template_parts(_heredoc(raw[1:-1]), quoted=False)), scope)
            if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
                return self.eval(("tmpl", template_parts(raw[1:-1])), scope)
            return raw
        if isinstance(raw, list):
            return [self.value(v, scope) for v in raw]
        if isinstance(raw, dict):
            return {
                str(self.value(k, scope)) if k.startswith('"') else k: self.value(v, scope)
                for k, v in raw.items()
                if not k.startswith("__")
            }
        return raw

    def local(self, name: str) -> Any:
        if name not in self.local_values:
            self.local_values[name] = UNKNOWN  # a cycle reads as unknown
            self.local_values[name] = self.value(self.local_exprs[name], {})
        return self.local_values[name]

    def eval(self, node: Any, scope: dict[str, Any]) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "tmpl":
            parts = [p if isinstance(p, str) else self.eval(p, scope) for p in node[1]]
            if len(parts) == 3 and parts[0] == parts[2] == "" and not isinstance(parts[1], str):
                return parts[1]  # "${x}" keeps x's type
            if any(isinstance(p, Unknown) for p in parts):
                return UNKNOWN
            return "".join(_text(p) for p in parts)
        if kind == "name":
            return self.name(node[1], scope)
        if kind == "attr":
            base = self.eval(node[1], scope)
            return self.get(base, node[2])
        if kind == "index":
            base, key = self.eval(node[1], scope), self.eval(node[2], scope)
            if isinstance(base, Ref) and base.key is None and not base.attrs:
                return Ref(base.address, key)
            return self.get(base, key)
        if kind == "splat":
            return UNKNOWN
        if kind == "tuple":
            return [self.eval(n, scope) for n in node[1]]
        if kind == "object":
            return {_text(self.eval(k, scope)): self.eval(v, scope) for k, v in node[1]}
        if kind == "cond":
            test = self.eval(node[1], scope)
            if isinstance(test, (Ref, Unknown)):
                return UNKNOWN
            return self.eval(node[2] if test else node[3], scope)
        if kind == "un":
            operand = self.eval(node[2], scope)
            if isinstance(operand, (Ref, Unknown)):
                return UNKNOWN
            return (not operand) if node[1] == "!" else -operand
        if kind == "bin":
            return _binary(node[1], self.eval(node[2], scope), self.eval(node[3], scope))
        if kind == "call":
            return self.call(node[1], node[2], node[3], scope)
        if kind == "for":
            return self.for_expr(node, scope)
        raise SyntaxError(kind)

    def name(self, name: str, scope: dict[str, Any]) -> Any:
        if name in scope:
            return scope[name]
        if scope.get("__types__") and name in ("string", "number", "bool", "any"):
            return name
        if name == "var":
            return self.variables
        if name == "local":
            return _Locals(self)
        if name == "path":
            return {"module": str(self.directory), "root": str(self.directory), "cwd": str(self.directory)}
        if name in ("data", "module"):
            return _Prefix(name)
        if "_" in name:  # a resource type
            return _Prefix(name)
        raise NameError(f"unknown name {name!r}")

    def get(self, base: Any, key: Any) -> Any:
        if isinstance(base, Unknown) or isinstance(key, (Ref, Unknown)):
            return UNKNOWN
        if isinstance(base, _Prefix):
            return base.then(str(key))
        if isinstance(base, Ref):
            return Ref(base.address, base.key, (*base.attrs, str(key)))
        if isinstance(base, _Locals):
            return base.config.local(str(key))
        if isinstance(base, dict):
            if key not in base:
                raise KeyError(f"no key {key!r} in {sorted(base)[:20]}")
            return base[key]
        if isinstance(base, list):
            return base[int(key)]
        raise TypeError(f"cannot read {key!r} of {base!r}")

    def for_expr(self, node: Any, scope: dict[str, Any]) -> Any:
        _, close, names, collection_node, first, second, cond = node
        collection = self.eval(collection_node, scope)
        if isinstance(collection, (Unknown, Ref)):  # a resource's instances are known only after apply
            return UNKNOWN
        pairs = list(collection.items()) if isinstance(collection, dict) else list(enumerate(collection))
        tuple_out: list[Any] = []
        object_out: dict[str, Any] = {}
        for k, v in pairs:
            inner = dict(scope)
            if len(names) == 2:
                inner[names[0]], inner[names[1]] = k, v
            else:
                inner[names[0]] = v
            if cond is not None:
                test = self.eval(cond, inner)
                if isinstance(test, (Ref, Unknown)):
                    return UNKNOWN
                if not test:
                    continue
            if close == "]":
                tuple_out.append(self.eval(first, inner))
            else:
                object_out[_text(self.eval(first, inner))] = self.eval(second, inner)
        return tuple_out if close == "]" else object_out

    def call(self, name: str, arg_nodes: list[Any], expand: bool, scope: dict[str, Any]) -> Any:
        if scope.get("__types__"):
            if name == "optional":
                return _Optional(
                    self.eval(arg_nodes[0], scope), self.eval(arg_nodes[1], scope) if len(arg_nodes) > 1 else None
                )
            if name in ("object", "list", "map", "set", "tuple"):
                return (name, self.eval(arg_nodes[0], scope))
        if name == "can":
            try:
                result = self.eval(arg_nodes[0], scope)
            except (KeyError, TypeError, ValueError, IndexError, re.error):
                return False
            return not isinstance(result, Unknown)
        args = [self.eval(n, scope) for n in arg_nodes]
        if expand:
            args = args[:-1] + list(args[-1])
        if name in ("templatefile", "timestamp", "uuid") or any(isinstance(a, Unknown) for a in args):
            return UNKNOWN
        if any(isinstance(a, Ref) for a in args) and name not in ("toset", "tolist", "concat", "merge", "tomap"):
            return UNKNOWN
        return FUNCTIONS[name](self, *args)


def _single(raw: str) -> bool:
    """Whether "${...}" is one interpolation (not "${a}-${b}")."""
    try:
        parts = template_parts(raw)
    except (SyntaxError, IndexError):
        return False
    return len(parts) == 3 and parts[0] == parts[2] == ""


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _binary(op: str, left: Any, right: Any) -> Any:
    if isinstance(left, (Ref, Unknown)) or isinstance(right, (Ref, Unknown)):
        if (op == "&&" and left is False) or (op == "||" and left is True):
            return left
        return UNKNOWN
    ops = {
        "||": lambda: left or right,
        "&&": lambda: left and right,
        "==": lambda: left == right,
        "!=": lambda: left != right,
        "<": lambda: left < right,
        ">": lambda: left > right,
        "<=": lambda: left <= right,
        ">=": lambda: left >= right,
        "+": lambda: left + right,
        "-": lambda: left - right,
        "*": lambda: left * right,
        "/": lambda: left / right,
        "%": lambda: left % right,
    }
    return ops[op]()


class _Prefix:
    """`google_x`, then `google_x.name` (a Ref), or `data.google_x.name`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def then(self, name: str) -> Any:
        path = f"{self.path}.{name}"
        if path.startswith(("data.", "module.")) and path.count(".") < 2:
            return _Prefix(path)
        return Ref(path)


@dataclass
class _Locals:
    config: Config


@dataclass
class _Optional:
    kind: Any
    default: Any


def _apply_type(kind: Any, value: Any) -> Any:
    """Optional attributes' defaults of an object type, applied to a variable's value."""
    if isinstance(kind, tuple) and kind[0] == "object" and isinstance(value, dict):
        out = dict(value)
        for name, spec in kind[1].items():
            if isinstance(spec, _Optional):
                out[name] = _apply_type(spec.kind, out.get(name, spec.default))
            elif name in out:
                out[name] = _apply_type(spec, out[name])
        return out
    return value


def _regex(pattern: str, text: str) -> Any:
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"{pattern!r} does not match {text!r}")
    return match.group(0)


def _replace(text: str, old: str, new: str) -> str:
    if len(old) > 1 and old.startswith("/") and old.endswith("/"):
        return re.sub(old[1:-1], new, text)
    return text.replace(old, new)


FUNCTIONS: dict[str, Any] = {
    "merge": lambda c, *m: _merge(*m),
    "toset": lambda c, v: _set(v),
    "tolist": lambda c, v: list(v),
    "tomap": lambda c, v: dict(v),
    "keys": lambda c, m: sorted(m),
    "values": lambda c, m: [m[k] for k in sorted(m)],
    "contains": lambda c, items, v: v in items,
    "lookup": lambda c, m, k, *d: m[k] if k in m else d[0],
    "replace": lambda c, s, a, b: _replace(s, a, b),
    "endswith": lambda c, s, x: s.endswith(x),
    "startswith": lambda c, s, x: s.startswith(x),
    "trimsuffix": lambda c, s, x: s.removesuffix(x),
    "trimprefix": lambda c, s, x: s.removeprefix(x),
    "tostring": lambda c, v: _text(v),
    "tonumber": lambda c, v: float(v) if "." in str(v) else int(v),
    "lower": lambda c, s: s.lower(),
    "upper": lambda c, s: s.upper(),
    "join": lambda c, sep, items: sep.join(_text(i) for i in items),
    "split": lambda c, sep, s: s.split(sep),
    "concat": lambda c, *lists: [x for item in lists for x in item],
    "flatten": lambda c, items: _flatten(items),
    "length": lambda c, v: len(v),
    "alltrue": lambda c, items: all(items),
    "anytrue": lambda c, items: any(items),
    "regex": lambda c, p, s: _regex(p, s),
    "jsonencode": lambda c, v: _jsonencode(v),
    "jsondecode": lambda c, s: json.loads(s),
    "base64encode": lambda c, s: base64.b64encode(s.encode()).decode(),
    "file": lambda c, p: Path(p).read_text(),
    "fileset": lambda c, d, p: sorted(
        str(Path(f).relative_to(d)) for pat in _braces(p) for f in glob.glob(f"{d}/{pat}", recursive=True)
    ),
    "coalesce": lambda c, *v: next(x for x in v if x not in (None, "")),
    "distinct": lambda c, v: _set(v),
    "format": lambda c, f, *a: f.replace("%s", "{}").format(*a),
}


def _braces(pattern: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", pattern)
    if match is None:
        return [pattern]
    return [pattern[: match.start()] + option + pattern[match.end() :] for option in match.group(1).split(",")]
