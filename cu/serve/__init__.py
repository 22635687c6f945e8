"""`aocu serve`: the top layer, wiring the HTTP workers (cu.http) and the evaluator process (cu.node)."""
