"""The parts of :mod:`alexdsl.ir.elaborate`, one concern each, stacked in this order:

state (shared state, values, scopes, adding a node) -> values (expressions, settings) -> binding
(op arguments, fillers) -> declarations -> scopes (name lookup) -> blocks (expansion, sizes) ->
chains (layer statements, repeats, splits). The driver, :class:`alexdsl.ir.elaborate.Elaborator`,
runs them over a module.
"""
