"""The command line through click's CliRunner."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner
from conftest import EXAMPLES, GOLDEN

import alexdsl
from alexdsl.cli import main

ALEXNET = str(EXAMPLES / "alexnet.adsl")


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version_and_help() -> None:
    assert run("--version").output.strip() == f"alexdsl, version {alexdsl.__version__}"
    out = run("--help").output
    assert "Examples:" in out and "alexdsl shapes examples/alexnet.adsl" in out
    assert "--batch" in run("shapes", "--help").output


def test_check_clean_files_exit_zero() -> None:
    result = run("check", *map(str, sorted(EXAMPLES.glob("*.adsl"))))
    assert result.exit_code == 0, result.output


def test_check_reports_every_error_and_exits_one() -> None:
    result = run("check", str(GOLDEN / "errors" / "many_mistakes.adsl"), ALEXNET)
    assert result.exit_code == 1
    assert "unknown op 'cnov'" in result.stderr and "did you mean 'stride'?" in result.stderr
    assert "5 errors" in result.stderr
    assert "1 of 2 files failed" in result.stderr
    assert "Traceback" not in result.output


def test_check_missing_file() -> None:
    result = run("check", "nope.adsl")
    assert result.exit_code == 1 and "no such file" in result.stderr


def test_shapes_json_schema() -> None:
    result = run("shapes", ALEXNET, "--format", "json")
    data = json.loads(result.stdout)
    assert data["network"] == "AlexNet"
    assert data["totals"] == {"params": 60_965_224, "macs": 724_406_816, "activation_bytes": 6_864_156}
    first = data["layers"][0]
    assert first == {"name": "data", "op": "input", "inputs": [], "shape": [3, 227, 227], "params": 0, "macs": 0,
                     "bytes": 618_348}
    conv1 = next(layer for layer in data["layers"] if layer["name"] == "conv1")
    assert conv1["shape"] == [96, 55, 55] and conv1["inputs"] == ["data"]


def test_shapes_batch_and_input_override() -> None:
    result = run("shapes", ALEXNET, "--format", "json", "--batch", "4", "--input", "data=3x224x224")
    data = json.loads(result.stdout)
    assert data["layers"][0]["shape"] == [3, 224, 224]
    assert data["totals"]["macs"] == 4 * sum(layer["macs"] // 4 for layer in data["layers"])
    assert "never reads the last row and column" in result.stderr  # the seed's 224 confusion


def test_shapes_csv_and_markdown() -> None:
    rows = list(csv.DictReader(io.StringIO(run("shapes", ALEXNET, "--format", "csv").stdout)))
    assert rows[-1]["name"] == "total" and rows[-1]["params"] == "60965224"
    markdown = run("shapes", ALEXNET, "--format", "markdown").stdout
    assert markdown.startswith("| layer | op | output |") and "**60,965,224**" in markdown


def test_shapes_bad_input_override() -> None:
    result = run("shapes", ALEXNET, "--input", "data=3xx")
    assert result.exit_code == 2 and "expected NAME=CxHxW" in result.output
    result = run("shapes", ALEXNET, "--input", "image=3x224x224")
    assert result.exit_code == 1 and "not a declared input" in result.stderr


def test_shapes_table_matches_golden() -> None:
    assert run("shapes", ALEXNET).stdout == (GOLDEN / "shapes" / "alexnet.adsl.txt").read_text()


def test_examples_are_in_canonical_format() -> None:
    result = run("fmt", "--check", *map(str, sorted(EXAMPLES.glob("*.adsl"))))
    assert result.exit_code == 0, result.output


def test_every_command_is_registered() -> None:
    assert set(main.commands) >= {"check", "shapes", "fmt", "import", "export", "draw", "compare"}
