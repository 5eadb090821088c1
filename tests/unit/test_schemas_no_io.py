"""The contracts package does no I/O: importing every module of ``schemas`` loads no Kafka,
ClickHouse or network client (docs/architecture.md: the models in ``schemas/`` are what every
component codes against; publishing them is ``callback/publish.py``'s job)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import schemas

#: client libraries the contracts must not pull in, directly or through another package
IO_LIBRARIES = ("confluent_kafka", "aiokafka", "clickhouse_driver", "faust", "panoramisk", "kafka")


def test_no_schemas_module_imports_an_io_library():
    modules = sorted(f"schemas.{m.name}" for m in pkgutil.iter_modules(schemas.__path__))
    assert "schemas.topics" in modules and "schemas.carrier_config" in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {IO_LIBRARIES!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(schemas.__file__).resolve().parents[1], check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [], (
        f"importing {modules} loaded an I/O library"
    )


def test_no_schemas_module_imports_io_even_inside_a_function():
    """The import above only sees module-level imports; this reads every import statement, a
    command's deferred one included. ``callback`` is where the Kafka and ClickHouse clients are."""
    import ast

    offenders = []
    for path in sorted(Path(schemas.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} {name}" for name in names
                          if name.split(".")[0] in (*IO_LIBRARIES, "callback")]
    assert offenders == []
