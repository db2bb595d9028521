#!/usr/bin/env python3
"""Renames the service everywhere it is an identifier: `make rename NAME=orders-api`.

Run it in a fresh clone of your fork. It reads the current name from the one place it is written
(`[package] name` in app/Cargo.toml), then rewrites every tracked text file and path:

    backend          -> orders-api   (crate, binary, image, compose service, job, chart, ...)
    backend_x, x::   -> orders_api   (Rust modules, shell and Python identifiers)
    BackendDown      -> OrdersApiDown (alert names and their runbook files)
    BACKEND_TAG      -> ORDERS_API_TAG

Left alone: a lowercase name directly followed by a capital (a foreign camelCase field such as
Gateway API's `backendRefs`), any line carrying the marker `rename: keep` (the Ingress `backend:`
field), LICENSE and template/. It changes nothing when the name is invalid or when the tree has a spelling
it cannot map for certain (it lists them), is idempotent (the same NAME again does nothing), and
leaves the changes uncommitted for review. template/test-rename.sh renames a clean clone on every
CI run and runs the suites that would see a broken rename.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tokenize
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME_SOURCE = Path("app/Cargo.toml")
KEEP_MARKER = "rename: keep"
# LICENSE keeps its holder; template/ is this machinery, which never names the service itself
# (it reads the name) and whose examples must survive a rename.
NOT_RENAMED = ("LICENSE", "template/")
# Grafana dashboard uids are at most 40 characters and ours are `<name>-process` (the longest
# suffix, 8); Kubernetes names (63) take `<name>-production` and Helm release names (53) `<name>`.
# template/test_rename.py checks this bound against the tree's real suffixes.
MAX_LENGTH = 32
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# Rust keywords (strict and reserved, 2024 edition) and the names Cargo refuses for a package.
RESERVED = {
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do",
    "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let",
    "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof", "unsafe",
    "unsized", "use", "virtual", "where", "while", "yield", "alloc", "core", "proc-macro", "std",
    "test", "build", "deps", "examples", "incremental", "con", "prn", "aux", "nul",
}
# Where the docs show the command, `NAME=orders-api` is about the name, not a use of it.
COMMAND_EXAMPLE = re.compile(r"NAME=[a-z0-9-]+")


@dataclass(frozen=True)
class Spellings:
    """The four ways a name is written: orders-api, orders_api, OrdersApi, ORDERS_API."""

    kebab: str

    @property
    def snake(self) -> str:
        return self.kebab.replace("-", "_")

    @property
    def camel(self) -> str:
        return "".join(part.capitalize() for part in self.kebab.split("-"))

    @property
    def screaming(self) -> str:
        return self.snake.upper()

    def pattern(self) -> re.Pattern[str]:
        """Every spelling as a whole token. A token may run on into `_`, `-`, `::` or, for
        CamelCase, a capital (`BackendDown`); never into a lowercase letter or digit."""
        forms = sorted({self.kebab, self.snake, self.camel, self.screaming}, key=len, reverse=True)
        return re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, forms)) + r")(?![a-z0-9])")


def validate(name: str) -> str | None:
    """Why NAME cannot be a service name, or None when it can."""
    if not NAME_RE.fullmatch(name):
        return (f"'{name}' is not a lowercase DNS-1123 label starting with a letter (a-z, 0-9, single "
                "hyphens between words), which Kubernetes, Docker, Prometheus and Cargo all accept")
    if len(name) > MAX_LENGTH:
        return f"'{name}' is {len(name)} characters; at most {MAX_LENGTH} fit the object names derived from it"
    if name in RESERVED or name.replace("-", "_") in RESERVED:
        return f"'{name}' is a Rust keyword or a name Cargo refuses for a package"
    return None


def current_name(root: Path) -> str:
    return tomllib.loads((root / NAME_SOURCE).read_text())["package"]["name"]


def tracked_files(root: Path) -> list[Path]:
    """Tracked and new (not ignored) files that exist, but for NOT_RENAMED: the tree a fresh
    clone has, plus a previous run's renamed paths."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, check=True, capture_output=True,
    ).stdout.decode()
    paths = sorted({Path(p) for p in out.split("\0") if p})
    return [p for p in paths if (root / p).is_file() and not (root / p).is_symlink()
            and not p.as_posix().startswith(NOT_RENAMED)]


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, ValueError):
        return None  # binary


class Renamer:
    """Maps every occurrence of OLD to NEW's spelling of the same kind."""

    def __init__(self, old: str, new: str):
        self.old, self.new = Spellings(old), Spellings(new)
        self.pattern = self.old.pattern()
        # A one-word name is the same in kebab and snake case; its context decides.
        self.one_word = "-" not in old

    def _replacement(self, text: str, m: re.Match[str], identifier: bool) -> str:
        token, start, end = m.group(1), m.start(1), m.end(1)
        if token == self.old.screaming and token != self.old.kebab:
            return self.new.screaming
        if token == self.old.camel and token != self.old.kebab:
            return self.new.camel
        if token == self.old.snake and not self.one_word:
            return self.new.snake
        # The kebab token (and, for a one-word name, the snake one).
        if end < len(text) and text[end].isupper():
            return token  # a foreign camelCase identifier such as backendRefs
        if self.one_word and (identifier or text[end:end + 1] == "_" or text[start - 1:start] == "_"
                              or text[end:end + 2] == "::" or text[max(start - 2, 0):start] == "::"):
            return self.new.snake
        return self.new.kebab

    def text(self, text: str, python: bool = False) -> tuple[str, int]:
        """TEXT renamed, and how many tokens changed. Lines with the keep marker stay as they are.
        In PYTHON source a bare name (`backend = ...`, `args.backend`) is an identifier: snake case."""
        count = 0
        names = python_names(text, self.old.snake) if python else set()
        lines = text.splitlines(keepends=True)
        for i, line in enumerate(lines):
            if KEEP_MARKER in line:
                continue

            def swap(m: re.Match[str]) -> str:
                nonlocal count
                new = self._replacement(line, m, (i + 1, m.start(1)) in names)
                count += new != m.group(1)
                return new

            lines[i] = self.pattern.sub(swap, line)
        return "".join(lines), count

    def path(self, path: Path) -> Path:
        return Path(self.text(path.as_posix())[0])


def python_names(source: str, name: str) -> set[tuple[int, int]]:
    """(line, column) of every NAME token that is NAME in Python SOURCE."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return set()
    return {t.start for t in tokens if t.type == tokenize.NAME and t.string == name}


# Spellings of a one-word name that the rules above cannot map for certain: (pattern, reason,
# the files it applies to). {kebab} and {Camel} stand for the name's spellings.
ANY, NOT_PYTHON = (lambda p: True), (lambda p: p.suffix != ".py")  # Python names are tokenised
AMBIGUOUS = [
    (r"(?<![A-Za-z0-9]){Camel}(?![A-Z])",
     "a capitalised name alone: write the identifier ({kebab}) or a CamelCase identifier", ANY),
    (r"(?<![A-Za-z0-9])(?i:{kebab})[a-z0-9]", "the name with a suffix (a plural?): reword", ANY),
    (r"[A-Za-z0-9_)\]]\.{kebab}(?![A-Za-z0-9_:-])", "an attribute or host part: write {kebab}_x or reword",
     NOT_PYTHON),
    (r"[$]\{{?{kebab}\}}?(?![A-Za-z0-9_:])", "a bare shell variable: use {kebab}_x", ANY),
    (r"(?<![$A-Za-z0-9])\{{{kebab}\}}", "a bare format placeholder: use {kebab}_x", NOT_PYTHON),
    (r",{kebab}=", "a tracing target (the crate's module path is snake case): write {kebab}::module=level", ANY),
    (r"^\s*(?:local\s+|export\s+)?{kebab}=", "a bare shell variable: use {kebab}_x", lambda p: p.suffix == ".sh"),
]
# In Rust, code outside strings and comments: a bare name there is an identifier.
RUST_STRINGS_AND_COMMENTS = re.compile(r'"(?:\\.|[^"\\])*"|//.*')


def ambiguities(root: Path, files: list[Path], name: str) -> list[str]:
    """file:line: reason, for every spelling of a one-word NAME the rename cannot map for certain."""
    if "-" in name:
        return []  # every spelling of a multi-word name says which one it is
    s = Spellings(name)
    rules = [(re.compile(p.format(kebab=re.escape(s.kebab), Camel=re.escape(s.camel))), why.format(kebab=name), applies)
             for p, why, applies in AMBIGUOUS]
    rust_bare = re.compile(rf"(?<![A-Za-z0-9_:]){re.escape(name)}(?![A-Za-z0-9_:])")
    found = []
    for rel in files:
        text = read_text(root / rel)
        for number, line in enumerate((text or "").splitlines(), 1):
            if KEEP_MARKER in line:
                continue
            found += [f"{rel}:{number}: {why}: {line.strip()[:100]}"
                      for rule, why, applies in rules if applies(rel) and rule.search(line)]
            if rel.suffix == ".rs" and rust_bare.search(RUST_STRINGS_AND_COMMENTS.sub("", line)):
                found.append(f"{rel}:{number}: a bare Rust identifier: write {name}_x: {line.strip()[:100]}")
    return found


def collisions(root: Path, files: list[Path], name: str) -> list[str]:
    """Places where NAME (in any spelling) is already written: a name the template already uses
    (metrics, http, prometheus, job, ...) would be indistinguishable from it after the rename."""
    pattern = Spellings(name).pattern()
    found = []
    for rel in files:
        text = read_text(root / rel) or ""
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(COMMAND_EXAMPLE.sub("", line)):
                found.append(f"{rel}:{number}: {line.strip()[:100]}")
    return found


PLACEHOLDERS = re.compile(r"example-org|example\.com")
# Where a placeholder is configuration a fork deploys, not an example in a test or a doc.
DEPLOYED = re.compile(r"^(deploy/(argocd|charts/[^/]+/(Chart\.yaml|values[^/]*\.yaml))|\.github/)")


def still_by_hand(root: Path, files: list[Path]) -> list[str]:
    """Placeholder values in the deployed configuration that a fork has to replace with its own."""
    out = []
    for rel in files:
        if not DEPLOYED.match(rel.as_posix()):
            continue
        text = read_text(root / rel) or ""
        out += [f"{rel}:{n}: {line.strip()[:110]}" for n, line in enumerate(text.splitlines(), 1)
                if PLACEHOLDERS.search(line)]
    return out


def rename(root: Path, new: str, out=sys.stdout) -> int:
    """Renames the tree at ROOT to NEW. 0: renamed or already named so; 2: refused, nothing changed."""
    def say(*lines: str) -> None:
        print(*lines, sep="\n", file=out)

    if (why := validate(new)) is not None:
        say(f"rename: refused: {why}. Nothing was changed.")
        return 2
    old = current_name(root)
    if old == new:
        say(f"rename: the service is already named '{new}' ({NAME_SOURCE}); nothing to do.")
        return 0
    files = tracked_files(root)
    if clash := collisions(root, files, new):
        say(f"rename: refused: '{new}' is already used in the repository, so after a rename it could not be "
            "told apart from the service's name. Choose another name. Nothing was changed. Uses:",
            *("  " + c for c in clash[:20]), *(["  ..."] if len(clash) > 20 else []))
        return 2
    if unclear := ambiguities(root, files, old):
        say(f"rename: refused: these spellings of '{old}' cannot be mapped for certain; reword them, or add "
            f"`{KEEP_MARKER}` to a line that must stay. Nothing was changed.", *("  " + u for u in unclear))
        return 2

    renamer = Renamer(old, new)
    plan: list[tuple[Path, Path, str | None, int]] = []  # (path, new path, new text or None, tokens)
    for rel in files:
        text = read_text(root / rel)
        new_text, count = renamer.text(text, rel.suffix == ".py") if text is not None else (None, 0)
        target = renamer.path(rel)
        if count or target != rel:
            plan.append((rel, target, new_text if count else None, count))
    for rel, target, new_text, _ in plan:
        if new_text is not None:
            (root / rel).write_text(new_text, encoding="utf-8")
        if target != rel:
            (root / target).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).rename(root / target)
    prune_empty_dirs(root, {rel.parent for rel, target, _, _ in plan if target != rel})

    total = sum(count for *_, count in plan)
    say(f"rename: '{old}' -> '{new}': {total} identifiers in {sum(1 for p in plan if p[3])} files.")
    for rel, target, _, count in plan:
        moved = f" -> {target}" if target != rel else ""
        say(f"  {rel}{moved}" + (f" ({count})" if count else ""))
    say("", "Nothing is committed: review with `git add -A && git status` (git then shows the moves).",
        "Still yours to set by hand (also in README.md, \"Start your own service\"):",
        "  - the image registry: GitHub secret DOCKER_REGISTRY (and credentials) in the `release` environment;",
        "  - LICENSE's copyright holder and SECURITY.md's contact;",
        "  - these placeholders:")
    say(*("      " + line for line in still_by_hand(root, tracked_files(root))))
    return 0


def prune_empty_dirs(root: Path, dirs: set[Path]) -> None:
    for rel in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        d = root / rel
        while d != root and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent


def check(root: Path, out=sys.stdout) -> int:
    """0 when every spelling of the current name in the tree can be renamed for certain."""
    name = current_name(root)
    unclear = ambiguities(root, tracked_files(root), name)
    for line in unclear:
        print(f"  {line}", file=out)
    print(f"rename --check: {len(unclear)} spellings of '{name}' that a rename cannot map for certain", file=out)
    return 1 if unclear else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="the new name: lowercase words joined by single hyphens, e.g. orders-api")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    parser.add_argument("--check", action="store_true", help="change nothing; fail on spellings a rename cannot map")
    args = parser.parse_args()
    root = args.root.resolve()
    if args.check:
        return check(root)
    if not args.name:
        parser.error("NAME is required, e.g. make rename NAME=orders-api")
    return rename(root, args.name)


if __name__ == "__main__":
    sys.exit(main())
