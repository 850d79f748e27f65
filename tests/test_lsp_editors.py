"""Real editors against `alexdsl lsp`: headless Neovim's built-in client, and the VS Code extension's manifest."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import EXAMPLES, ROOT

from alexdsl.cli import main
from alexdsl.extras import install_command
from alexdsl.frontend import build_network

VSCODE = ROOT / "editors" / "vscode"

# Opens FILE, attaches the server, waits for its diagnostics, asks for the inlay hints, types a
# mistake, waits for its diagnostic, and writes what nvim's API returned as JSON to OUT.
NVIM_SCRIPT = r"""
local file, out, python = os.getenv("ADSL_FILE"), os.getenv("ADSL_OUT"), os.getenv("ADSL_PYTHON")
local result = {}
vim.cmd("edit " .. vim.fn.fnameescape(file))
local bufnr = vim.api.nvim_get_current_buf()
local published = 0
local id = vim.lsp.start_client({
  name = "alexdsl",
  cmd = { python, "-m", "alexdsl.cli", "lsp" },
  root_dir = vim.fn.fnamemodify(file, ":h"),
  handlers = {
    ["textDocument/publishDiagnostics"] = function(err, res, ctx, config)
      published = published + 1
      vim.lsp.diagnostic.on_publish_diagnostics(err, res, ctx, config)
    end,
  },
})
vim.lsp.buf_attach_client(bufnr, id)
result.attached = vim.wait(30000, function() return published >= 1 end, 20)
result.diagnostics = vim.diagnostic.get(bufnr)
local last = vim.api.nvim_buf_line_count(bufnr)
local params = { textDocument = { uri = vim.uri_from_bufnr(bufnr) },
                 range = { start = { line = 0, character = 0 }, ["end"] = { line = last, character = 0 } } }
result.hints = {}
for _, response in pairs(vim.lsp.buf_request_sync(bufnr, "textDocument/inlayHint", params, 30000) or {}) do
  for _, hint in ipairs(response.result or {}) do
    table.insert(result.hints, { line = hint.position.line, character = hint.position.character, label = hint.label })
  end
end
local row = vim.fn.search("conv(96") - 1
local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1]
vim.api.nvim_buf_set_lines(bufnr, row, row + 1, false, { (line:gsub("conv%(96", "cnov(96")) })
result.edited = vim.wait(30000, function() return #vim.diagnostic.get(bufnr) > 0 end, 20)
result.after_edit = vim.diagnostic.get(bufnr)
vim.fn.writefile({ vim.fn.json_encode(result) }, out)
vim.lsp.stop_client(id)
vim.cmd("qa!")
"""


@pytest.mark.skipif(shutil.which("nvim") is None, reason="Neovim is not installed (CI installs Debian's neovim)")
def test_neovim_shows_the_diagnostics_and_the_shapes(tmp_path: Path) -> None:
    pytest.importorskip("pygls")
    script, out = tmp_path / "alexdsl.lua", tmp_path / "result.json"
    script.write_text(NVIM_SCRIPT)
    alexnet = tmp_path / "alexnet.adsl"
    text = (EXAMPLES / "alexnet.adsl").read_text()
    alexnet.write_text(text)
    nvim_dir = str(Path(shutil.which("nvim") or "/usr/bin/nvim").parent)
    env = {"ADSL_FILE": str(alexnet), "ADSL_OUT": str(out), "ADSL_PYTHON": sys.executable,
           "PATH": f"{nvim_dir}:/usr/bin:/bin",
           "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    subprocess.run(["nvim", "--headless", "--clean", "-c", f"luafile {script}"], env=env, cwd=ROOT, timeout=120,
                   check=True, capture_output=True)
    result = json.loads(out.read_text())
    assert result["attached"] and result["diagnostics"] == []  # alexnet.adsl is clean
    lines = text.split("\n")
    hints = {hint["line"]: hint["label"] for hint in result["hints"]}
    network = build_network(text, "alexnet.adsl")
    assert hints[_line_of(lines, "conv1:")] == "x".join(map(str, network.layer("conv1_lrn").shape)) == "96x27x27"
    assert hints[_line_of(lines, "fc8:")] == "1000"
    assert all(hint["character"] <= len(lines[hint["line"]]) for hint in result["hints"])
    assert result["edited"]
    (error,) = result["after_edit"]
    assert (error["lnum"], error["col"], error["end_col"]) == (_line_of(lines, "conv1:"), 7, 11)
    assert error["message"].startswith("unknown op 'cnov'") and "did you mean 'conv'?" in error["message"]


def _line_of(lines: list[str], prefix: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(prefix))


def test_lsp_without_its_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "alexdsl.lsp.server", raising=False)
    monkeypatch.setitem(sys.modules, "lsprotocol", None)  # as if neither were installed
    monkeypatch.setitem(sys.modules, "pygls", None)
    result = CliRunner().invoke(main, ["lsp"])
    assert result.exit_code == 1
    assert 'error: the language server needs the lsp extra' in result.stderr
    assert install_command("lsp") in result.stderr and "Traceback" not in result.output


# VS Code ---------------------------------------------------------------------------------------
def _manifest() -> dict:
    return json.loads((VSCODE / "package.json").read_text())


def test_vscode_manifest_has_what_vscode_requires() -> None:
    manifest = _manifest()
    for key in ("name", "publisher", "version", "engines", "main", "contributes", "activationEvents"):
        assert key in manifest, key
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", manifest["name"]) and re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert re.fullmatch(r"\^\d+\.\d+\.\d+", manifest["engines"]["vscode"])
    assert (VSCODE / manifest["main"]).is_file()
    assert "vscode-languageclient" in manifest["dependencies"]


def test_vscode_language_grammar_and_settings_match_the_server() -> None:
    from alexdsl.lsp.features import HintSettings
    from alexdsl.lsp.server import EXTENSION, LANGUAGE_ID

    contributes = _manifest()["contributes"]
    (language,) = contributes["languages"]
    assert language["id"] == LANGUAGE_ID and language["extensions"] == [EXTENSION]
    assert f"onLanguage:{LANGUAGE_ID}" in _manifest()["activationEvents"]
    configuration = json.loads((VSCODE / language["configuration"]).read_text())
    assert configuration["comments"]["lineComment"] == "#"
    (grammar,) = contributes["grammars"]
    grammar_file = (VSCODE / grammar["path"]).resolve()
    assert grammar_file == (ROOT / "editors" / "alexdsl.tmLanguage.json").resolve()
    assert json.loads(grammar_file.read_text())["scopeName"] == grammar["scopeName"]
    settings = {key.removeprefix("alexdsl.inlayHints.") for key in contributes["configuration"]["properties"]
                if key.startswith("alexdsl.inlayHints.")}
    assert settings == set(HintSettings.__dataclass_fields__)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed: apt-get install nodejs")
def test_vscode_extension_script_parses() -> None:
    subprocess.run(["node", "--check", str(VSCODE / "extension.js")], check=True, capture_output=True)
