// Starts `alexdsl lsp` for .adsl files. The grammar is ../alexdsl.tmLanguage.json (generated).
"use strict";
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate() {
  const config = vscode.workspace.getConfiguration("alexdsl");
  const [command, ...args] = config.get("server.command", ["alexdsl", "lsp"]);
  client = new LanguageClient(
    "alexdsl",
    "alexdsl",
    { command, args },
    {
      documentSelector: [{ scheme: "file", language: "alexdsl" }, { scheme: "untitled", language: "alexdsl" }],
      initializationOptions: { alexdsl: { inlayHints: config.get("inlayHints") } },
      synchronize: { configurationSection: "alexdsl" },
    },
  );
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
