"""`python -m dtab`: try a path against a dtab from the shell, without a router.

Namers are not part of `dtab`, so a path that reaches `/#/…` or `/$/…` is
shown as where it would hit a namer (`/$/fail` and `/$/nil` are Finagle's
built-in Fail and Empty and are applied). The syntax of the global names is
known (dtab.globalnames, shared with the router): `/$/inet`, `/$/fixedinet`
and `/$/io.buoyant.rinet` show the router's bound id and residual, and an
unknown or malformed `/$/` name is the router's "unknown namer" error. Exit status: 0 when the path
reaches a namer, 1 when it resolves to nothing (neg), fail or an error, 2 on
bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dtab.addr import ADDR_PENDING, BoundName
from dtab.binding import bind
from dtab.delegation import (
    AltNode,
    DelegateNode,
    DelegateTree,
    EmptyNode,
    ExceptionNode,
    FailNode,
    LeafNode,
    NegNode,
    TransformationNode,
    UnionNode,
    delegate,
)
from dtab.dtab import Dtab
from dtab.errors import DtabParseError
from dtab.globalnames import UnknownNamerError, check_global, parse_inet
from dtab.nametree import Empty, Fail, Leaf, NameTree
from dtab.observable import Activity, Failed, Ok, Var
from dtab.path import Path


def namer_placeholder(path: Path) -> Activity | None:
    """Stand-in for the router's namers: a `/#/` or `/$/` path is 'a namer's job'."""
    e = path.elems
    if e[:2] == ("$", "fail"):
        return Activity.ok(Fail)
    if e[:2] == ("$", "nil"):
        return Activity.ok(Empty)
    if e[:1] == ("$",):
        try:
            check_global(path)
            name = parse_inet(path)
        except UnknownNamerError as err:
            return Activity(Failed(err))
        if name is not None:
            return Activity.ok(Leaf(BoundName(name.id, Var(ADDR_PENDING), name.residual)))
    if e[:1] in (("#",), ("$",)) and len(e) >= 2:
        return Activity.ok(Leaf(BoundName(path, Var(ADDR_PENDING))))
    return None


def render(node: DelegateTree, indent: str = "") -> list[str]:
    """The delegation tree as indented text, one rewrite per line."""
    via = f"   [{node.dentry.show}]" if node.dentry is not None else ""
    if isinstance(node, DelegateNode):
        return [f"{indent}{node.path.show}{via}", *render(node.tree, indent + "  ")]
    if isinstance(node, AltNode):
        lines = [f"{indent}{node.path.show}{via}   (alternatives: first that is not ~ wins)"]
        for t in node.trees:
            lines += render(t, indent + "| ")
        return lines
    if isinstance(node, UnionNode):
        lines = [f"{indent}{node.path.show}{via}   (union: load split by weight)"]
        for w in node.trees:
            sub = render(w.tree, indent + "& ")
            sub[0] = f"{indent}& {w.weight:g}* " + sub[0][len(indent) + 2 :]
            lines += sub
        return lines
    if isinstance(node, LeafNode):
        return [f"{indent}{node.path.show}{via}   -> namer {node.path.show}"]
    if isinstance(node, NegNode):
        why = f": {node.reason}" if node.reason else ""
        where = f" {node.path.show}" if node.path.elems else ""
        return [f"{indent}~{where}{via}   (neg{why})"]
    if isinstance(node, FailNode):
        return [f"{indent}! {node.path.show}{via}   (fail: stop, no fallback)"]
    if isinstance(node, EmptyNode):
        return [f"{indent}$ {node.path.show}{via}   (empty)"]
    if isinstance(node, ExceptionNode):
        return [f"{indent}error at {node.path.show}{via}: {node.message}"]
    if isinstance(node, TransformationNode):
        return [f"{indent}{node.path.show} via {node.name}", *render(node.tree, indent + "  ")]
    return [f"{indent}{node!r}"]


def _bound_summary(tree: NameTree[BoundName]) -> str:
    return tree.map(lambda b: b.id + b.residual).show


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dtab",
        description="Show how a path is rewritten by a dtab (Finagle/Linkerd 1 rules).",
    )
    parser.add_argument(
        "--dtab", action="append", default=[], help="dtab text; repeat to append (later wins)"
    )
    parser.add_argument("--dtab-file", action="append", default=[], help="read dtab text from file")
    parser.add_argument("--json", action="store_true", help="print the /delegator.json tree")
    parser.add_argument("path", help="the logical name, e.g. /svc/hello")
    args = parser.parse_args(argv)

    try:
        dtab = Dtab.empty()
        for name in args.dtab_file:
            with open(name, encoding="utf-8") as f:
                dtab = dtab + Dtab.read(f.read())
        for text in args.dtab:
            dtab = dtab + Dtab.read(text)
        path = Path.read(args.path)
    except (DtabParseError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    tree = delegate(dtab, path, namer_placeholder)
    if args.json:
        print(tree.dumps())
    else:
        print(f"dtab: {dtab.show or '(empty)'}")
        print("\n".join(render(tree)))
    result = bind(dtab, path, namer_placeholder)
    if isinstance(result.state, Ok):
        chosen = result.state.value
        if chosen.eval() is None:
            if not args.json:
                print(f"result: {chosen.show}  (no route: a router would answer 502)")
            return 1
        if not args.json:
            print(f"result: {_bound_summary(chosen)}  (namer path + residual; namers decide)")
        return 0
    if isinstance(result.state, Failed):
        if not args.json:
            print(f"result: error: {result.state.error}")
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
