"""The folders show the floors: every import of the package goes down (or stays in its folder),
read from the source with `ast`, so a new module cannot reach up unnoticed."""

import ast
import pathlib
import re

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
# Bottom to top; folders on one floor do not import each other. The package's own top-level
# modules (errors, backend, io, config) are the ground floor.
FLOORS = (
    ("",),
    ("data", "models"),
    ("weights",),
    ("training", "runtime"),
    ("pretrain", "segment"),
    ("cli",),
)
FLOOR = {folder: number for number, folders in enumerate(FLOORS) for folder in folders}
# The two applications live at the top of the repository and install inside the package.
SOURCES = {"deeplab_xception": REPOSITORY / "deeplab_xception",
           "deeplab_xception.pretrain": REPOSITORY / "pretrain",
           "deeplab_xception.segment": REPOSITORY / "segment"}


def _folder(module):
    """The floor folder of a dotted module name inside the package ("" for top-level modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FLOOR else ""


def _imports():
    """(file, module, imported module) for every absolute import of the package's code."""
    for package, root in SOURCES.items():
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root).with_suffix("").parts
            module = ".".join((package, *relative))
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    assert node.level == 0, f"{path}:{node.lineno}: relative import"
                    # `from deeplab_xception import inference` imports a module by its name.
                    names = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in ("deeplab_xception", "segment", "pretrain"):
                        yield path.relative_to(REPOSITORY), module, name


def test_every_folder_is_on_a_floor():
    folders = {p.name for p in (REPOSITORY / "deeplab_xception").iterdir()
               if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders | {"pretrain", "segment"} == set(FLOOR) - {""}


def test_nothing_imports_upward_or_sideways():
    upward = []
    for path, module, imported in _imports():
        assert imported.split(".")[0] == "deeplab_xception", f"{path}: imports {imported}, outside"
        mine, theirs = _folder(module), _folder(imported)
        if mine != theirs and FLOOR[theirs] >= FLOOR[mine]:
            upward.append(f"{path}: {mine or 'ground'} imports {imported}")
    assert upward == []


def _strings(tree):
    """Every string constant of a module but its docstrings, with its line."""
    scopes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, scopes) and node.body and isinstance(node.body[0], ast.Expr)}
    for node in ast.walk(tree):
        is_string = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if is_string and id(node) not in docstrings:
            yield node.lineno, node.value


def test_only_the_cli_names_flags():
    """Library errors name API arguments (ArgumentError); the CLI maps them to its flags."""
    flag = re.compile(r"(?<![\w-])--[a-z]")
    found = []
    for root in SOURCES.values():
        for path in sorted(root.rglob("*.py")):
            name = path.relative_to(REPOSITORY).as_posix()
            if name.startswith("deeplab_xception/cli/"):
                continue
            strings = _strings(ast.parse(path.read_text()))
            found += [f"{name}:{line}: {text!r}" for line, text in strings if flag.search(text)]
    assert found == []
