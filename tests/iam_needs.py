"""Each deployed function's IAM needs, derived from the code with `ast` (no import of what it reads, no network).

1. The wrappers: every function of src/progress_monitor decorated with `access.needs(...)` declares what its
   Google calls need ("<kind> <resource>", the resource literal or `{expression}`). `outside_wrappers` fails
   any Google client call (by method name) or use of a `google.cloud` name (other than an annotation or a type
   such as `bigquery.Table`) outside a declared function or a helper only such functions call.
2. The walk: from each function's entry point (functions/<source>/main.py, `entry_point` of Terraform's
   `local.functions`) a static call graph of our package: module functions, imported names, `module.func`,
   class constructors, class methods, and any other `x.method()` as every method of that name in the package
   (over-approximated: the receiver's type is not inferred). Nested functions, lambdas and functions passed
   as values (callbacks, dispatch tables) count as called. Arguments are followed into callees
   (context-sensitive), so a topic passed three calls down is still read at its source.
3. At every wrapper call site reached, each declared `{expression}` is evaluated statically: string constants,
   f-strings, concatenation and `join` (unknown parts become `*`), local and module assignments, loops over
   literal tuples and dicts, calls of our functions (their return expressions), `warehouse.render`'s
   placeholders, `sql/*.sql` files read with `read_text`, message classes (their `TOPIC`), settings fields
   (`cfg.<x>_topic`). A resource that cannot be resolved is an error naming the call site, unless the caller's
   `unresolved` list explains it (tests/test_terraform_iam.py's UNRESOLVED).
4. The needs, in tests/tf_model.py's terms: SQL tables read / written (a written table is also read: MERGE,
   UPDATE and DELETE read their target); a table created at run time (CREATE) or a reporting table or view
   read (Terraform does not create them one by one) needs its dataset; objects folded by contract prefix into
   the bucket that holds them (contracts.objects.bucket_of: shards or state): a prefix rewritten in place gets
   objectUser there, a deleted one delete there, reads and creates are granted bucket-wide.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from progress_monitor.contracts.objects import SHARDS, STATE, bucket_of
from progress_monitor.platform.warehouse import NAMES, RESTRICTED, TABLES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "progress_monitor"
FUNCTIONS = ROOT / "functions"
MAIN, RESTRICTED_DATASET = "main", "restricted"

# Methods of Google's clients and their handles (BigQuery, Cloud Storage, Pub/Sub, Secret Manager) that make a
# request (`client.bucket()` and `bucket.blob()` only make handles). Calls on our own modules do not count.
GOOGLE_METHODS = frozenset(
    {
        # BigQuery
        "query", "query_and_wait", "load_table_from_uri", "load_table_from_file", "load_table_from_json",
        "load_table_from_dataframe", "create_table", "delete_table", "get_table", "update_table", "insert_rows",
        "insert_rows_json", "list_rows", "list_tables", "create_dataset", "delete_dataset", "get_dataset",
        "update_dataset", "copy_table", "extract_table", "get_job", "cancel_job", "list_jobs",
        # Cloud Storage
        "get_blob", "list_blobs", "upload_from_string", "upload_from_file", "upload_from_filename",
        "download_as_bytes", "download_as_string", "download_as_text", "download_to_file", "download_to_filename",
        "delete_blob", "delete_blobs", "copy_blob", "rename_blob", "compose", "rewrite", "get_bucket",
        "lookup_bucket", "create_bucket", "list_buckets", "make_public", "make_private", "generate_signed_url",
        "reload", "exists", "patch",
        # Pub/Sub
        "publish", "topic_path", "create_topic", "get_topic", "subscribe", "pull", "acknowledge",
        "modify_ack_deadline",
        # Secret Manager
        "access_secret_version", "add_secret_version", "create_secret", "get_secret", "list_secret_versions",
        # shared
        "delete",
    }
)  # fmt: skip
# A call site whose resource the code cannot say: (caller, wrapper) -> the resource to use instead
# (tests/test_terraform_iam.py keeps the list, each entry with its reason).
Unresolvable = dict[tuple[str, str], str]

Item = tuple[str, object]  # ("s", text) | ("set", settings field) | ("t", class) | ("f", function) | ("map", ...)
Val = frozenset[Item]
UNKNOWN: Val = frozenset()
MAX_ALTERNATIVES = 64
SETTINGS = "progress_monitor.settings:Settings"
MAX_CONTEXTS = 12  # distinct argument values a function is walked with before it is walked without them


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    assigns: dict[str, list[ast.expr]] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)  # local name -> module, or module:attribute


Ref = str  # "module:function" or "module:Class.method"


def module_name(path: Path, root: Path) -> str:
    parts = ["progress_monitor", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _index(name: str, path: Path) -> Module:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = Module(name, path, tree)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            module.functions[node.name] = node
        elif isinstance(node, ast.ClassDef):
            module.classes[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    module.assigns.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            module.assigns.setdefault(node.target.id, []).append(node.value)
    for inner in ast.walk(tree):
        if isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
            for alias in inner.names:
                module.imports[alias.asname or alias.name] = f"{inner.module}:{alias.name}"
        elif isinstance(inner, ast.Import):
            for alias in inner.names:
                module.imports[alias.asname or alias.name.split(".")[0]] = alias.name
    return module


def _decorated_needs(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str] | None:
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", getattr(decorator.func, "attr", "")) == (
            "needs"
        ):
            return [a.value for a in decorator.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return None


@dataclass
class Context:
    module: Module
    function: ast.FunctionDef | ast.AsyncFunctionDef | None
    env: dict[str, Val]
    ref: Ref = ""


class Package:
    """The package's modules, indexed for the walk."""

    def __init__(self, root: Path = PACKAGE) -> None:
        self.root = root
        self.modules = {module_name(p, root): _index(module_name(p, root), p) for p in sorted(root.rglob("*.py"))}
        self.methods: dict[str, list[Ref]] = {}
        self.wrappers: dict[Ref, list[str]] = {}
        self.nodes: dict[Ref, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        for module in self.modules.values():
            for name, fn in module.functions.items():
                self._add(f"{module.name}:{name}", fn)
            for cls_name, cls in module.classes.items():
                for item in cls.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        self._add(f"{module.name}:{cls_name}.{item.name}", item)
                        self.methods.setdefault(item.name, []).append(f"{module.name}:{cls_name}.{item.name}")
        self._locals: dict[int, dict[str, list[tuple[str, ast.expr, int | None]]]] = {}
        self._returns: dict[tuple[Ref, tuple[tuple[str, Val], ...]], Val] = {}
        self._returning: set[tuple[Ref, tuple[tuple[str, Val], ...]]] = set()
        self.objects = self.modules.get("progress_monitor.contracts.objects")
        self._members: dict[tuple[str, str], Val] = {}
        self._local_values: dict[tuple[int, str, tuple[tuple[str, Val], ...]], Val] = {}

    def _add(self, ref: Ref, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.nodes[ref] = node
        declared = _decorated_needs(node)
        if declared is not None:
            self.wrappers[ref] = declared

    def add_entry_module(self, module: Module) -> None:
        """A function's main.py, so that its own helpers (`INSTANCE.built()`, services.PerInstance) are walked too."""
        self.modules[module.name] = module
        for name, fn in module.functions.items():
            self._add(f"{module.name}:{name}", fn)

    def module_of(self, ref: Ref) -> Module:
        return self.modules[ref.split(":")[0]]

    # -- names ----------------------------------------------------------------------------------------------

    def member(self, module_name_: str, name: str) -> Val:
        """What `name` is in one of our modules: a function, a class, a constant or a submodule."""
        module = self.modules.get(module_name_)
        if module is None:
            sub = f"{module_name_}.{name}"
            return frozenset({("mod", sub)}) if sub in self.modules else UNKNOWN
        key = (module.name, name)
        if key not in self._members:
            self._members[key] = UNKNOWN  # a constant defined through itself resolves to nothing
            self._members[key] = self.member_in(module, name)
        return self._members[key]

    def member_in(self, module: Module, name: str) -> Val:
        if name in module.functions:
            return frozenset({("f", f"{module.name}:{name}")})
        if name in module.classes:
            return frozenset({("cls", f"{module.name}:{name}")})
        if name in module.assigns:
            ctx = Context(module, None, {})
            return _union(self.eval(v, ctx) for v in module.assigns[name])
        if f"{module.name}.{name}" in self.modules:
            return frozenset({("mod", f"{module.name}.{name}")})
        if name in module.imports:
            return self.imported(module.imports[name])
        return UNKNOWN

    def imported(self, target: str) -> Val:
        if ":" in target:
            source, name = target.split(":")
            if source.startswith("progress_monitor"):
                return self.member(source, name)
            return frozenset({("ext", target)})
        if target in self.modules:
            return frozenset({("mod", target)})
        return frozenset({("ext", target)})

    def locals_of(self, fn: ast.AST) -> dict[str, list[tuple[str, ast.expr, int | None]]]:
        """Every binding in a function (nested functions and comprehensions included): name -> (how, expr)."""
        if id(fn) in self._locals:
            return self._locals[id(fn)]
        found: dict[str, list[tuple[str, ast.expr, int | None]]] = {}

        def bind(target: ast.expr, how: str, value: ast.expr, index: int | None = None) -> None:
            if isinstance(target, ast.Name):
                found.setdefault(target.id, []).append((how, value, index))
            elif isinstance(target, ast.Tuple | ast.List):
                for i, element in enumerate(target.elts):
                    if (
                        how == "expr"
                        and isinstance(value, ast.Tuple | ast.List)
                        and len(value.elts) == len(target.elts)
                    ):
                        bind(element, "expr", value.elts[i])
                    else:
                        bind(element, "iter" if how == "iter" else "part", value, i)

        for node in ast.walk(fn):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    bind(target, "expr", node.value)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.NamedExpr) and node.value is not None:
                bind(node.target, "expr", node.value)
            elif isinstance(node, ast.For | ast.comprehension):
                bind(node.target, "iter", node.iter)
        self._locals[id(fn)] = found
        return found

    # -- values ---------------------------------------------------------------------------------------------

    def eval(self, node: ast.expr, ctx: Context, depth: int = 0) -> Val:
        """The values `node` may have, as far as the code says (UNKNOWN when it does not)."""
        if depth > 40:
            return UNKNOWN

        def ev(n: ast.expr) -> Val:
            return self.eval(n, ctx, depth + 1)

        if isinstance(node, ast.Constant):
            return frozenset({("s", node.value if isinstance(node.value, str) else str(node.value))})
        if isinstance(node, ast.JoinedStr):
            parts = [
                _strings(ev(v.value)) if isinstance(v, ast.FormattedValue) else [str(getattr(v, "value", ""))]
                for v in node.values
            ]
            return _concat(parts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return _concat([_strings(ev(node.left)), _strings(ev(node.right))])
        if isinstance(node, ast.Name):
            return self.name(node.id, ctx, depth)
        if isinstance(node, ast.Attribute):
            return self.attribute(node, ctx, depth)
        if isinstance(node, ast.Call):
            return self.call(node, ctx, depth)
        if isinstance(node, ast.Dict):
            entries: dict[str, Val] = {}
            for key_node, value_node in zip(node.keys, node.values, strict=True):
                if key_node is None:
                    for m in _maps(ev(value_node)):
                        entries.update(m)
                    continue
                for text in _strings(ev(key_node)):
                    entries[text] = entries.get(text, UNKNOWN) | ev(value_node)
            return frozenset({("map", tuple(sorted(entries.items(), key=lambda kv: kv[0])))})
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return _union(ev(e) for e in node.elts)
        if isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp):
            return ev(node.elt)
        if isinstance(node, ast.DictComp):
            values = ev(node.value)
            return frozenset({("map", tuple((k, values) for k in _strings(ev(node.key))))})
        if isinstance(node, ast.IfExp):
            return ev(node.body) | ev(node.orelse)
        if isinstance(node, ast.BoolOp):
            return _union(ev(v) for v in node.values)
        if isinstance(node, ast.Subscript):
            base, keys = ev(node.value), _strings(ev(node.slice))
            return _union(m.get(k, UNKNOWN) for m in _maps(base) for k in keys)
        if isinstance(node, ast.Starred):
            return ev(node.value)
        return UNKNOWN

    def name(self, name: str, ctx: Context, depth: int) -> Val:
        if name in ctx.env:
            return ctx.env[name]
        if ctx.function is not None:
            bindings = self.locals_of(ctx.function).get(name)
            if bindings:
                key = (id(ctx.function), name, _key(ctx.env))
                if key not in self._local_values:
                    self._local_values[key] = UNKNOWN  # `x = x + ...`: what it held before is not known
                    self._local_values[key] = _union(
                        [self.binding(how, value, index, ctx, depth) for how, value, index in bindings]
                    )
                return self._local_values[key]
            for arg in _params(ctx.function):
                if arg.arg == name:
                    return self.annotation(arg.annotation, ctx.module)
        else:  # a module-level comprehension's own variable
            bindings = [b for b in self.locals_of(ctx.module.tree).get(name, []) if b[0] == "iter"]
            if bindings:
                return _union(self.binding(how, value, index, ctx, depth) for how, value, index in bindings)
        found = (
            self.member_in(ctx.module, name)
            if ctx.module.name not in self.modules
            else self.member(ctx.module.name, name)
        )
        if not found and self.objects is not None and ctx.module is not self.objects and ctx.function is None:
            found = self.member(self.objects.name, name)  # a declaration may name an object contract
        return found

    def binding(self, how: str, value: ast.expr, index: int | None, ctx: Context, depth: int) -> Val:
        val = self.eval(value, ctx, depth + 1)
        if how == "expr":
            return val
        if how == "part":
            return UNKNOWN
        # a loop over a literal: a dict's keys, `.items()` pairs, a tuple's elements
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
            method, base = value.func.attr, self.eval(value.func.value, ctx, depth + 1)
            maps = _maps(base)
            if method == "items" and maps:
                if index == 0:
                    return _union(frozenset(("s", k) for k in m) for m in maps)
                return _union(v for m in maps for v in m.values()) if index == 1 else UNKNOWN
            if method == "keys" and maps:
                return _union(frozenset(("s", k) for k in m) for m in maps)
            if method == "values" and maps:
                return _union(v for m in maps for v in m.values())
        if isinstance(value, ast.Call) and getattr(value.func, "id", "") in ("sorted", "list", "tuple", "set"):
            val = self.eval(value.args[0], ctx, depth + 1) if value.args else UNKNOWN
        maps = _maps(val)
        keys = _union(frozenset(("s", k) for k in m) for m in maps)
        return keys | frozenset(item for item in val if item[0] != "map") if index is None else UNKNOWN

    def annotation(self, node: ast.expr | None, module: Module) -> Val:
        """An annotation naming one of our classes -> an instance of it."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node = ast.parse(node.value, mode="eval").body
        if isinstance(node, ast.Name):
            return frozenset(("t", ref) for kind, ref in self.member(module.name, node.id) if kind == "cls")
        return UNKNOWN

    def attribute(self, node: ast.Attribute, ctx: Context, depth: int) -> Val:
        base = self.eval(node.value, ctx, depth + 1)
        found: set[Item] = set()
        if node.attr in self.settings_fields and (not base or ("t", SETTINGS) in base):
            return frozenset({("set", node.attr)})  # a settings field: its value is the environment's
        for kind, ref in base:
            if kind == "mod":
                found |= self.member(str(ref), node.attr)
            elif kind == "ext":  # another library's name (`requests.Session`): its attributes are its own
                found.add(("ext", f"{ref}.{node.attr}"))
            elif kind in ("cls", "t"):
                module, cls = str(ref).split(":")
                for item in self.modules[module].classes[cls].body:
                    targets = item.targets if isinstance(item, ast.Assign) else [getattr(item, "target", None)]
                    if any(getattr(t, "id", None) == node.attr for t in targets) and getattr(item, "value", None):
                        found |= self.eval(item.value, Context(self.modules[module], None, {}), depth + 1)  # type: ignore[attr-defined]
                if f"{ref}.{node.attr}" in self.nodes:
                    found.add(("f", f"{ref}.{node.attr}"))
        return frozenset(found)

    @functools.cached_property
    def settings_fields(self) -> frozenset[str]:
        settings = self.modules.get("progress_monitor.settings")
        cls = settings.classes.get("Settings") if settings else None
        body = cls.body if cls else []
        return frozenset(i.target.id for i in body if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name))

    def callees(self, node: ast.Call, ctx: Context, depth: int = 0) -> Val:
        """What a call may run: our functions, classes, or (by name) every method of ours so named."""
        target = frozenset(item for item in self.eval(node.func, ctx, depth + 1) if item[0] in ("f", "cls"))
        if target and all(kind == "f" and _stub(self.nodes[str(ref)]) for kind, ref in target):
            target = UNKNOWN  # a Protocol's method (`svc.cademi()` is a CademiSource): whichever class implements it
        if not target and isinstance(node.func, ast.Attribute):
            receiver = self.eval(node.func.value, ctx, depth + 1)
            if any(kind in ("ext", "mod") for kind, _ in receiver):
                return UNKNOWN  # a function of another library, or a name our module does not have
            if node.func.attr.startswith("__"):
                return UNKNOWN  # `super().__init__()`: our base classes' constructors make no Google call
            return frozenset(("f", ref) for ref in self.methods.get(node.func.attr, []))
        return frozenset(item for item in target if item[0] in ("f", "cls"))

    def call(self, node: ast.Call, ctx: Context, depth: int) -> Val:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "join" and node.args:
            sep = _strings(self.eval(func.value, ctx, depth + 1))
            parts = _strings(self.eval(node.args[0], ctx, depth + 1))
            return frozenset({("s", (sep[0] if sep else "*").join(sorted(parts)) or "*")})
        if isinstance(func, ast.Attribute) and func.attr == "read_text":
            return self.package_files(func.value, ctx, depth)
        if isinstance(func, ast.Attribute) and func.attr in ("keys", "values", "items") and not node.args:
            maps = _maps(self.eval(func.value, ctx, depth + 1))
            keys = _union(frozenset(("s", k) for k in m) for m in maps)
            values = _union(v for m in maps for v in m.values())
            if maps:
                return {"keys": keys, "values": values}.get(func.attr, keys | values)
        found: set[Item] = set()
        for kind, ref in self.callees(node, ctx, depth):
            if kind == "cls":
                found.add(("t", ref))
                continue
            ref = str(ref)
            if ref.endswith("warehouse:render") or ref == "progress_monitor.platform.warehouse:render":
                env = self.bind(ref, node, ctx, depth)
                found |= render(env.get("sql", UNKNOWN), env.get("sql_vars", UNKNOWN))
                continue
            found |= self.returns(ref, self.bind(ref, node, ctx, depth), depth)
        return frozenset(found)

    def package_files(self, node: ast.expr, ctx: Context, depth: int) -> Val:
        """`<files>.joinpath("sql/x.sql").read_text()`: the text of the package files the name may be."""
        for inner in ast.walk(node):
            if isinstance(inner, ast.Call) and inner.args:
                for pattern in _strings(self.eval(inner.args[0], ctx, depth + 1)):
                    if pattern.endswith((".sql", ".json")):
                        return frozenset(
                            ("s", p.read_text(encoding="utf-8"))
                            for p in sorted(self.root.rglob("*"))
                            if fnmatch.fnmatch(p.relative_to(self.root).as_posix(), pattern)
                        )
        return UNKNOWN

    def bind(self, ref: Ref, node: ast.Call, ctx: Context, depth: int = 0) -> dict[str, Val]:
        """The callee's parameters bound to the values of this call's arguments."""
        fn = self.nodes[ref]
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        if "." in ref.split(":")[1] and params and params[0] in ("self", "cls"):
            params = params[1:]
        env: dict[str, Val] = {}
        for name, arg in zip(params, node.args, strict=False):
            if not isinstance(arg, ast.Starred) and (value := self.eval(arg, ctx, depth + 1)):
                env[name] = value
        for keyword in node.keywords:
            if keyword.arg is not None and (value := self.eval(keyword.value, ctx, depth + 1)):
                env[keyword.arg] = value
        for param in _params(fn):
            if param.arg not in env and param.arg not in ("self", "cls"):
                typed = self.annotation(param.annotation, self.module_of(ref))
                if typed:
                    env[param.arg] = typed
        return env

    def returns(self, ref: Ref, env: dict[str, Val], depth: int) -> Val:
        fn = self.nodes[ref]
        key = (ref, _key(env))
        if key in self._returns:
            return self._returns[key]
        if key in self._returning or depth > 30:
            return UNKNOWN
        self._returning.add(key)
        ctx = Context(self.module_of(ref), fn, env, ref)
        values = [self.eval(r.value, ctx, depth + 1) for r in _own_returns(fn) if r.value is not None]
        found = _union(values) | self.annotation(fn.returns, self.module_of(ref))
        self._returning.discard(key)
        self._returns[key] = found
        return found


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.arg]:
    a = fn.args
    return a.posonlyargs + a.args + a.kwonlyargs + ([a.vararg] if a.vararg else []) + ([a.kwarg] if a.kwarg else [])


def _stub(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A body of only a docstring and `...`: a Protocol's method, which runs nothing itself."""
    return all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in fn.body)


def _own_returns(fn: ast.AST) -> Iterator[ast.Return]:
    """The return statements of `fn` itself (not of the functions nested in it)."""
    todo = list(ast.iter_child_nodes(fn))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Return) and node.value is not None:
            yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(node))


def _key(env: dict[str, Val]) -> tuple[tuple[str, Val], ...]:
    return tuple(sorted(env.items(), key=lambda kv: kv[0]))


def _union(values: Iterator[Val] | list[Val] | itertools.chain[Val]) -> Val:
    found: set[Item] = set()
    for v in values:
        found |= v
    return frozenset(found)


def _maps(val: Val) -> list[dict[str, Val]]:
    """The dicts among a value's alternatives."""
    return [dict(item[1]) for item in val if item[0] == "map"]  # type: ignore[call-overload]


def _strings(val: Val) -> list[str]:
    return sorted(str(v) for kind, v in val if kind == "s")


def _concat(parts: list[list[str]]) -> Val:
    """Every concatenation of one alternative per part (an unknown part is `*`), merged when too many."""
    choices = [p or ["*"] for p in parts]
    count = 1
    for p in choices:
        count *= len(p)
    if count > MAX_ALTERNATIVES:  # keep every placeholder: one text holding every alternative
        return frozenset({("s", "".join(" ".join(p) for p in choices))})
    return frozenset(("s", "".join(combo)) for combo in itertools.product(*choices))


# -- SQL ----------------------------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def render(sql: Val, sql_vars: Val) -> Val:
    """`warehouse.render` on static values: each `${name}` given in `sql_vars` replaced by its values (all
    alternatives at once); table placeholders stay as they are."""
    given: dict[str, list[str]] = {}
    for m in _maps(sql_vars):
        for key, value in m.items():
            given.setdefault(key, []).extend(_strings(value))
    found: set[Item] = set()
    for text in _strings(sql):
        texts = {text}
        for _ in range(3):  # a value may hold placeholders of its own
            texts = {t for text in texts for t in _fill(text, given)}
        found |= {("s", t) for t in texts}
    return frozenset(found)


def _fill(text: str, given: dict[str, list[str]]) -> set[str]:
    """`text` with each given `${name}` filled in: one text per combination of alternatives (merged when too
    many, so that every placeholder survives)."""
    parts: list[list[str]] = []
    last = 0
    for m in PLACEHOLDER.finditer(text):
        values = next(
            (v or ["*"] for k, v in given.items() if m.group(1) == k or ("*" in k and fnmatch.fnmatch(m.group(1), k))),
            [m.group(0)],
        )
        parts += [[text[last : m.start()]], sorted(set(values))]
        last = m.end()
    parts.append([text[last:]])
    return {str(t) for _, t in _concat(parts)}


WRITE = re.compile(
    r"\b(MERGE(?:\s+INTO)?|INSERT(?:\s+INTO)?|UPDATE|DELETE(?:\s+FROM)?|TRUNCATE\s+TABLE|"
    r"CREATE(?:\s+OR\s+REPLACE)?\s+(?:TABLE|VIEW)(?:\s+IF\s+NOT\s+EXISTS)?)\s+`([^`]+)`",
    re.IGNORECASE,
)
REFERENCE = re.compile(r"`([^`]+)`|\$\{(\w+)\}")


def _table(reference: str) -> str:
    m = PLACEHOLDER.fullmatch(reference)
    return m.group(1) if m else reference.rsplit(".", 1)[-1]


def sql_needs(texts: list[str]) -> tuple[set[tuple[str, str]], list[str]]:
    """(kind, table) read and written by these SQL texts, and what could not be named."""
    found: set[tuple[str, str]] = set()
    problems: list[str] = []
    for text in texts:
        for verb, reference in WRITE.findall(text):
            name = _table(reference)
            if name in NAMES:
                found.add(("table.write", name))
                if verb.upper().startswith("CREATE"):
                    found.add(("dataset.write", _dataset(name)))
        for quoted, bare in REFERENCE.findall(text):
            name = _table(quoted or "${" + bare + "}")
            if name in NAMES:
                found.add(("table.read", name))
                if name not in TABLES:  # a reporting table or view, built at run time
                    found.add(("dataset.read", _dataset(name)))
            elif name.startswith("_staging_"):
                continue  # a loader's staging table: `_staging_table` declares its datasets
            elif bare or "${" in quoted or "*" in name:
                problems.append(f"unresolved table {quoted or '${' + bare + '}'}")
    return found, problems


def _dataset(table: str) -> str:
    return RESTRICTED_DATASET if table in RESTRICTED else MAIN


# -- the walk -----------------------------------------------------------------------------------------------


@dataclass
class Site:
    caller: str
    line: int
    wrapper: Ref
    needs: set[tuple[str, str]]
    problems: list[str]
    path: tuple[Ref, ...] = ()  # how the entry point reaches the caller


@dataclass
class Derivation:
    sites: dict[str, list[Site]] = field(default_factory=dict)  # function -> wrapper call sites reached
    unused_overrides: set[tuple[str, str]] = field(default_factory=set)

    def needs(self) -> dict[str, set[tuple[str, str]]]:
        return {fn: fold(set().union(*(s.needs for s in sites))) for fn, sites in self.sites.items()}

    def errors(self) -> list[str]:
        return sorted(
            {
                f"{fn}: {s.caller} line {s.line} calls {s.wrapper}: {problem}"
                for fn, sites in self.sites.items()
                for s in sites
                for problem in s.problems
            }
        )


def fold(raw: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Raw needs in tests/tf_model.py's terms (objects by contract prefix; a written table is read too)."""
    needs = {n for n in raw if not n[0].startswith("objects.")}
    needs |= {("table.read", t) for k, t in raw if k == "table.write"}
    needs -= {("dataset.read", d) for k, d in raw if k == "dataset.write"}
    areas: dict[str, set[str]] = {}
    for kind, path in raw:
        if kind.startswith("objects."):
            areas.setdefault(path, set()).add(kind.removeprefix("objects."))
    for area, verbs in areas.items():
        if area in ("", STATE):  # a declaration naming a whole bucket ("objects.read shards"), not objects in it
            bucket = where = area or SHARDS
        else:
            bucket = bucket_of(area)  # the bucket that holds these objects (contracts.objects)
            where = f"{bucket}/{area}"
        if "rewrite" in verbs:
            needs.add(("objects.readwrite", where))
            continue
        if "delete" in verbs:
            needs.add(("objects.delete", where))
        if "read" in verbs:
            needs.add(("objects.read", bucket))
        if "create" in verbs:
            needs.add(("objects.create", bucket))
    return needs


def area(pattern: str) -> str | None:
    """An object name (or prefix) pattern -> the area it belongs to: the exact name when it has no unknown part,
    else its first folder (`progress/`, `slack/`); None when not even that is known."""
    if "*" not in pattern:
        return pattern
    head = pattern.split("*", 1)[0]
    return head.split("/", 1)[0] + "/" if "/" in head else None


class Walker:
    def __init__(self, package: Package, unresolved: Unresolvable) -> None:
        self.p = package
        self.unresolved = unresolved
        self.seen: set[tuple[Ref, tuple[tuple[str, Val], ...]]] = set()
        self.sites: list[Site] = []
        self.stack: list[Ref] = []
        self.used: set[tuple[str, str]] = set()
        self.envs: dict[Ref, int] = {}

    def walk(self, ref: Ref, env: dict[str, Val], module: Module | None = None, node: ast.AST | None = None) -> None:
        self.envs[ref] = self.envs.get(ref, 0) + 1
        if self.envs[ref] > MAX_CONTEXTS:
            env = {}  # walked in too many contexts: once more with only what the annotations say
        key = (ref, _key(env))
        if key in self.seen or ref in self.stack:
            return  # walked with these arguments already, or a recursion
        self.seen.add(key)
        self.stack.append(ref)
        try:
            self._walk(ref, env, module, node)
        finally:
            self.stack.pop()

    def _walk(self, ref: Ref, env: dict[str, Val], module: Module | None, node: ast.AST | None) -> None:
        fn = node if node is not None else self.p.nodes[ref]
        ctx = Context(module or self.p.module_of(ref), fn, env, ref)  # type: ignore[arg-type]
        inside_wrapper = ref in self.p.wrappers
        called = {id(c.func) for c in ast.walk(fn) if isinstance(c, ast.Call)}
        for inner in ast.walk(fn):
            if isinstance(inner, ast.Call):
                for kind, target in self.p.callees(inner, ctx):
                    target = str(target)
                    if kind == "cls":
                        for init in ("__init__", "__post_init__"):
                            if f"{target}.{init}" in self.p.nodes:
                                self.walk(f"{target}.{init}", self.p.bind(f"{target}.{init}", inner, ctx))
                        continue
                    if target in self.p.wrappers:
                        if inside_wrapper:
                            continue  # covered by the calling wrapper's own declaration
                        self.sites.append(self.site(ctx, inner, target))
                    self.walk(target, self.p.bind(target, inner, ctx))
            elif (
                isinstance(inner, ast.Name | ast.Attribute)
                and isinstance(inner.ctx, ast.Load)
                and id(inner) not in called
            ):
                self.references(inner, ctx)

    def references(self, node: ast.Name | ast.Attribute, ctx: Context) -> None:
        """A function used as a value (a callback, a dispatch table's entry) counts as called."""
        if isinstance(node, ast.Name) and ctx.function is not None and node.id in self.p.locals_of(ctx.function):
            return
        if isinstance(node, ast.Name) and node.id in ctx.env:
            return
        for kind, target in self.p.eval(node, ctx):
            if kind == "f" and str(target) not in self.p.wrappers:
                self.walk(str(target), {})
        if isinstance(node, ast.Name) and node.id in ctx.module.assigns:  # a module table of functions
            for value in ctx.module.assigns[node.id]:
                for inner in ast.walk(value):
                    if isinstance(inner, ast.Name):
                        for kind, target in self.p.member(ctx.module.name, inner.id):
                            if kind == "f" and str(target) not in self.p.wrappers:
                                self.walk(str(target), {})

    def site(self, ctx: Context, call: ast.Call, wrapper: Ref) -> Site:
        env = self.p.bind(wrapper, call, ctx)
        for param in _params(self.p.nodes[wrapper]):
            env.setdefault(param.arg, UNKNOWN)  # an argument not known never falls back to a module name
        wctx = Context(self.p.module_of(wrapper), None, env, wrapper)
        caller = ctx.ref.replace(":", ".")
        site = Site(caller, call.lineno, wrapper, set(), [], tuple(self.stack))
        override = self.unresolved.get((caller, wrapper.replace(":", ".")))
        for declared in self.p.wrappers[wrapper]:
            kind, _, resource = declared.partition(" ")
            expressions = re.findall(r"\{([^}]+)\}", resource)
            values = [self.declared_value(e, wctx) for e in expressions]
            try:
                site.needs |= resolve(kind, resource, values, self.p)
            except Unresolved as problem:
                if override is not None and kind.startswith("objects."):
                    site.needs.add((kind, "" if override == "shards" else override))
                    self.used.add((caller, wrapper.replace(":", ".")))
                else:
                    site.problems.append(f"{declared!r}: {problem}")
        return site

    def declared_value(self, expression: str, ctx: Context) -> Val:
        """A declaration's `{expression}`; a function named there (an object-name contract) stands for what it
        returns, whatever its arguments."""
        value = self.p.eval(ast.parse(expression, mode="eval").body, ctx)
        functions = [str(ref) for kind, ref in value if kind == "f"]
        return _union([value - {("f", f) for f in functions}, *(self.p.returns(f, {}, 0) for f in functions)])


class Unresolved(ValueError):
    pass


def resolve(kind: str, resource: str, values: list[Val], package: Package) -> set[tuple[str, str]]:
    """One declaration at one call site -> raw needs."""
    if kind in ("client",):
        return set()
    if kind == "tables":
        sql = render(values[0], values[1] if len(values) > 1 else UNKNOWN)
        texts = _strings(sql)
        if not texts:
            raise Unresolved("the SQL is not a constant, a file or built from constants")
        found, problems = sql_needs(texts)
        if problems:
            raise Unresolved("; ".join(sorted(set(problems))))
        return found
    if not values:
        literal = "" if kind.startswith("objects.") and resource == "shards" else resource
        return {(kind, literal)}
    (value,) = values
    if kind.startswith("objects."):
        patterns = _strings(value)
        areas = {area(p) for p in patterns}
        if not patterns or None in areas:
            raise Unresolved(f"object name {patterns or 'unknown'}: not built by a contracts/objects.py name")
        return {(kind, str(a)) for a in areas}
    if kind == "topic.publish":
        fields = set()
        for item_kind, ref in value:
            if item_kind == "set":
                fields.add(str(ref))
            elif item_kind in ("t", "cls"):
                module, cls = str(ref).split(":")
                fields |= {
                    str(v)
                    for k, v in package.attribute(
                        ast.Attribute(value=ast.Name(id=cls), attr="TOPIC"),
                        Context(package.modules[module], None, {}),
                        0,
                    )
                    if k == "s"
                }
        topics = {f.removesuffix("_topic") for f in fields if f.endswith("_topic")}
        if not topics:
            raise Unresolved("no topic: neither a settings `*_topic` field nor a message class with a TOPIC")
        return {(kind, t) for t in topics}
    if kind == "secret":
        names = _strings(value)
        if not names:
            raise Unresolved("the secret's name is not a constant")
        return {(kind, n) for n in names}
    raise Unresolved(f"no rule for kind {kind}")


# -- entry points -------------------------------------------------------------------------------------------


def derive(
    functions: dict[str, dict[str, str]],
    unresolved: Unresolvable,
    package_root: Path = PACKAGE,
    functions_root: Path = FUNCTIONS,
) -> Derivation:
    """Each deployed function (Terraform's `local.functions`: source folder and entry point) -> its wrapper sites."""
    package = Package(package_root)
    derivation = Derivation()
    used: set[tuple[str, str]] = set()
    for fn, spec in sorted(functions.items()):
        main = _index(f"functions.{spec['source']}.main", functions_root / spec["source"] / "main.py")
        package.add_entry_module(main)
        node = main.functions[spec["entry_point"]]
        walker = Walker(package, unresolved)
        walker.walk(f"{main.name}:{spec['entry_point']}", {}, main, node)
        derivation.sites[fn] = walker.sites
        used |= walker.used
    derivation.unused_overrides = set(unresolved) - used
    return derivation


# -- no Google call outside the wrappers --------------------------------------------------------------------


def outside_wrappers(root: Path = PACKAGE) -> list[str]:
    """Every Google client call (GOOGLE_METHODS on anything but our modules or a parameter typed with one of our
    classes, such as `svc: Services`) and every use of a `google.cloud` name (but in an annotation, or a type such
    as `bigquery.Table` or `storage.Bucket`; a `*Client` is a use) outside a function declared with
    `access.needs` or a private helper only such functions call."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _index(module_name(path, root), path)
        ours = {n for n, target in module.imports.items() if target.startswith("progress_monitor")}
        ours |= set(module.functions) | set(module.classes)
        google = {n for n, target in module.imports.items() if target.startswith("google.cloud")}
        annotations = {id(n) for a in _annotations(module.tree) for n in ast.walk(a)}
        types = {  # a type or value object is no request: `bigquery.Table(...)`, `storage.Bucket`
            id(n.value)
            for n in ast.walk(module.tree)
            if isinstance(n, ast.Attribute) and n.attr[:1].isupper() and not n.attr.endswith("Client")
        }
        for owner, nodes in _owners(module).items():
            if owner in _covered(module):
                continue
            typed = {  # parameters annotated with one of our classes (`svc: Services`): their methods are ours
                a.arg
                for fn in nodes
                if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                for a in _params(fn)
                if isinstance(a.annotation, ast.Name) and a.annotation.id in ours
            }
            for node in nodes:
                where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    receiver = node.func.value
                    if node.func.attr in GOOGLE_METHODS and getattr(receiver, "id", None) not in ours | typed:
                        found.append(f"{where}: .{node.func.attr}() outside a declared wrapper")
                elif isinstance(node, ast.ImportFrom | ast.Import) and owner:
                    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                    if any(n.startswith("google.cloud") for n in names):
                        found.append(f"{where}: imports google.cloud outside a declared wrapper")
                elif isinstance(node, ast.Name) and node.id in google and id(node) not in annotations | types:
                    found.append(f"{where}: uses google.cloud's {node.id} outside a declared wrapper")
    return sorted(set(found))


def _annotations(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from (a.annotation for a in _params(node) if a.annotation is not None)
            if node.returns is not None:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def _owners(module: Module) -> dict[str, list[ast.AST]]:
    """Each top-level function or method ("" for module-level code) -> the nodes inside it."""
    owned: dict[str, list[ast.AST]] = {"": []}
    inside: set[int] = set()
    for name, fn in module.functions.items():
        owned[name] = list(ast.walk(fn))
    for cls_name, cls in module.classes.items():
        for item in cls.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                owned[f"{cls_name}.{item.name}"] = list(ast.walk(item))
    for nodes in list(owned.values()):
        inside |= {id(n) for n in nodes}
    owned[""] = [n for n in ast.walk(module.tree) if id(n) not in inside]
    return owned


def _covered(module: Module) -> set[str]:
    """The module's declared wrappers, and its private functions called only from them."""
    owners = _owners(module)
    covered = {name for name, nodes in owners.items() if name and _decorated_needs(nodes[0]) is not None}  # type: ignore[arg-type]
    while True:
        more = set()
        for name in module.functions:
            if not name.startswith("_") or name in covered:
                continue
            users = {o for o, nodes in owners.items() for n in nodes if isinstance(n, ast.Name) and n.id == name}
            if users and users <= covered:
                more.add(name)
        if not more:
            return covered
        covered |= more
