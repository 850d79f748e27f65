"""Syntax tree -> IR graph, in parts, one concern each, each class built on the one before:

state (shared state, scopes, block instances, the one place a node is added) -> values
(expressions, arithmetic, settings) -> binding (op arguments, fillers) -> declarations (inputs,
defaults, blocks) -> scopes (name lookup and resolution) -> blocks (expansion, sizes before
expanding) -> chains (layer statements, automatic names, repeats, splits). unknown_ops reports
unknown ops once the module is done. The driver, :class:`alexdsl.ir.elaboration.driver.Elaborator`,
runs them over a module.
"""
