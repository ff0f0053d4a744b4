"""The import rules of DESIGN.md: one ``lsr`` namespace, layers that only import downwards,
no heavy library in a layer that does not need it, and no import circle between modules."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> its folder in the repository (pyproject's package-dir)
PACKAGES = {
    "lsr": "lsr",
    "lsr.kernels": "kernels",
    "lsr.index": "index",
    "lsr.pipeline": "pipeline",
    "lsr.eval": "eval",
    "lsr.service": "service",
}
SHARED = {"lsr", "lsr.errors", "lsr.checks"}  # the namespace root and what every layer shares
ENCODERS = {"lsr.bm25", "lsr.encoders", "lsr.encoder", "lsr.splade", "lsr.corpus", "lsr.mlm"}


def _loaded_after(statement: str, cwd: Path) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd
    )
    return set(out.stdout.split())


@pytest.fixture(scope="module")
def shadowing_dir(tmp_path_factory):
    """A working directory with folders named like the old top-level packages (what
    ``lsr index corpus --out index`` leaves behind): nothing of lsr may come from them."""
    cwd = tmp_path_factory.mktemp("cwd")
    for name in ("index", "eval", "kernels", "service", "pipeline"):
        (cwd / name).mkdir()
        (cwd / name / "manifest.json").write_text("{}")
    return cwd


def _ours(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "lsr" or m.startswith("lsr.")}


@pytest.mark.parametrize(
    ("statement", "allowed", "forbidden"),
    [
        ("import lsr", {"lsr"}, {"torch", "numpy", "numba"}),
        ("import lsr.kernels", {"lsr", "lsr.kernels"}, {"torch", "pyarrow"}),
        ("import lsr.index", {*SHARED, "lsr.kernels", "lsr.index"}, {"torch", "tokenizers"}),
        ("import lsr.encoders", {*SHARED, *ENCODERS, "lsr.tokenization"}, {"torch", "numba"}),
        ("import lsr.bm25", {*SHARED, *ENCODERS, "lsr.tokenization", "lsr.sparse"}, {"torch"}),
        ("import lsr.pipeline", None, {"torch", "fastapi", "lsr.service", "lsr.eval"}),
        ("import lsr.eval", None, {"torch", "fastapi", "ir_datasets", "lsr.service"}),
        ("import lsr.service.cli", None, {"torch", "fastapi", "ir_datasets"}),
    ],
)
def test_imports_stay_in_their_layer(shadowing_dir, statement, allowed, forbidden):
    loaded = _loaded_after(statement, shadowing_dir)
    assert not loaded & forbidden
    if allowed is not None:
        ours = {m for m in _ours(loaded) if not any(m.startswith(a + ".") for a in allowed)}
        assert ours <= allowed, ours - allowed


def test_public_api_imports_from_a_directory_that_shadows_old_names(shadowing_dir):
    statement = (
        "from lsr import BM25Encoder, load_encoder, read_corpus, __version__;"
        "from lsr.index import Index, IndexBuilder, LiveIndex, ClusteredIndex, SearchResults;"
        "from lsr.index import Searchable, merge_topk;"
        "from lsr.pipeline import Searcher, index_corpus;"
        "from lsr.eval import evaluate, load_dataset;"
        "from lsr.kernels import search_many;"
        "from lsr.service.cli import main"
    )
    loaded = _loaded_after(statement, shadowing_dir)
    stray = {m.split(".")[0] for m in loaded} & {"index", "eval", "kernels", "service", "pipeline"}
    assert not stray


def test_version_comes_from_the_installed_metadata(shadowing_dir):
    from importlib.metadata import version

    import lsr

    assert lsr.__version__ == version("lsr-engine")
    out = subprocess.run(
        [sys.executable, "-m", "lsr.service.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=shadowing_dir,
    )
    assert out.returncode == 0 and out.stdout.strip() == f"lsr {lsr.__version__}"
    assert "0.1.0" not in (ROOT / "index" / "inverted.py").read_text()
    assert "0.1.0" not in (ROOT / "service" / "app.py").read_text()


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts]
            parts = [p for p in parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def _import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, anywhere in its code (lazy imports too)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lsr"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    deps.add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("lsr"))
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_no_import_circle_between_modules():
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                circle = path[path.index(dep) :] + [dep]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


LAYER_RULES = {  # a layer -> the layers of ours it may import (besides lsr, errors, checks)
    "lsr.kernels": set(),
    "lsr.index": {"lsr.kernels"},
    "lsr": set(),
    "lsr.pipeline": {"lsr", "lsr.index", "lsr.kernels"},
    "lsr.eval": {"lsr", "lsr.index", "lsr.kernels", "lsr.pipeline"},
    "lsr.service": {"lsr", "lsr.index", "lsr.kernels", "lsr.pipeline", "lsr.eval"},
}


def _layer(module: str) -> str:
    for package in sorted(PACKAGES, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    raise AssertionError(module)


def test_layers_only_import_downwards():
    wrong = []
    for module, deps in _import_graph().items():
        layer = _layer(module)
        for dep in deps:
            if dep in SHARED or _layer(dep) == layer:
                continue
            if _layer(dep) not in LAYER_RULES[layer]:
                wrong.append(f"{module} imports {dep}")
    assert not wrong, wrong


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package(tmp_path):
    """Built as pip builds it, the distribution puts ``lsr`` (and its metadata) in
    site-packages and nothing else, with every package and the bundled sample inside."""
    import zipfile
    from importlib.metadata import PackageNotFoundError, version

    try:  # the backend pyproject asks for, if this environment has it: no download
        isolation = int(version("setuptools").split(".")[0]) < 77
    except PackageNotFoundError:
        isolation = True
    options = ["--quiet", "--no-deps"] + ([] if isolation else ["--no-build-isolation"])
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *options, str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("lsr_engine-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"lsr"}
    for package in PACKAGES:
        assert package.replace(".", "/") + "/__init__.py" in names, package
    assert "lsr/service/routes/__init__.py" in names
    assert "lsr/data/sample/corpus.jsonl" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
