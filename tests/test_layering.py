"""The layering that docs/ARCHITECTURE.md states, read from the import statements of every file:
`nets`, `attacker` and `data` import nothing of each other (besides `attacker` using
`nets.registry`), `engine` imports only the library and the shared modules, the library never
sees the command line, and nothing imports upward."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = {"config", "ranges", "files"}
ALLOWED = {      # what each package may import of the project
    "nets": SHARED | {"nets"},
    "attacker": SHARED | {"attacker", "nets.registry"},
    "data": SHARED | {"data"},
    "engine": SHARED | {"nets", "attacker", "data", "engine"},
}
PROJECT = {"nets", "attacker", "data", "engine", "tools", "bench", "tests", "main", "flags"} | SHARED


def project_imports(path, package):
    """Dotted names of the project's modules imported by one file (relative imports resolved)."""
    tree = ast.parse(open(path).read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)[:-node.level]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return [name for name in found if name.split(".")[0] in PROJECT]


def allowed(name, permitted):
    return any(name == p or name.startswith(p + ".") for p in permitted)


def package_files(package):
    for folder, _, names in os.walk(os.path.join(ROOT, package)):
        yield from (os.path.join(folder, n) for n in sorted(names) if n.endswith(".py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_library_package_imports_only_what_its_layer_may(package):
    wrong = []
    for path in package_files(package):
        for name in project_imports(path, package):
            # `from nets import registry` is the module nets.registry; `from nets.registry import X` names X in it
            if not (allowed(name, ALLOWED[package]) or allowed(name.rsplit(".", 1)[0], ALLOWED[package])):
                wrong.append(f"{os.path.relpath(path, ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_the_library_never_sees_the_command_line(package):
    for path in package_files(package):
        tree = ast.parse(open(path).read(), path)
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not modules & {"argparse", "flags", "main"}, (path, modules & {"argparse", "flags", "main"})


def test_the_layering_check_notices_a_forbidden_import():
    planted = os.path.join(ROOT, "data", "_planted_for_test.py")
    with open(planted, "w") as f:
        f.write("from nets.backbone import network\nfrom . import imagenet\n")
    try:
        names = project_imports(planted, "data")
    finally:
        os.remove(planted)
    assert "nets.backbone.network" in names and "data.imagenet" in names
    assert not allowed("nets.backbone", ALLOWED["data"]) and allowed("data.imagenet", ALLOWED["data"])


def test_main_only_drives_and_flags_owns_every_flag():
    """main.py parses with flags.parse and adds no flag of its own; flags.py imports no driver."""
    tree = ast.parse(open(os.path.join(ROOT, "main.py")).read())
    calls = [n.func for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert not [c for c in calls if getattr(c, "attr", None) == "add_argument"], "main.py adds flags: flags.py's job"
    from_flags = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "flags"
                  for a in n.names}
    assert "parse" in from_flags and any(getattr(c, "id", None) == "parse" for c in calls)
    assert "main" not in {n.module for n in ast.walk(ast.parse(open(os.path.join(ROOT, "flags.py")).read()))
                          if isinstance(n, ast.ImportFrom)}


def test_no_library_function_is_longer_than_60_lines():
    """Issue 18's bound on the library (nets, attacker, data, engine): a longer function is split by what it does."""
    long = []
    for package in ALLOWED:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in (n for n in names if n.endswith(".py")):
                path = os.path.join(folder, name)
                for node in ast.walk(ast.parse(open(path).read(), path)):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        lines = node.end_lineno - node.lineno + 1
                        if lines > 60:
                            long.append("{}:{} {} ({} lines)".format(os.path.relpath(path, ROOT), node.lineno,
                                                                      node.name, lines))
    assert not long, long
