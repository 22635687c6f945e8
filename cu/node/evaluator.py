"""The local evaluator (CU role): `Evaluator`, composed in the `cu.node.eval` package (see its docstring for
the parts: warm instances, runner, outbox signing, patch cache, fresh-message cache, checkpoints, the loop)."""

from cu.node.eval.loop import Evaluator

__all__ = ["Evaluator"]
