"""Random structured programs with legacy exception handling, for differential testing of the translator.

Each program exports `run(i32) -> i64`: the parameter's bits decide which `maybe` calls throw, every step
is folded into a global trace, and the trace (exported as global `trace`) shows the exact control path,
including when an exception escapes. Loops run a bounded number of times and are never branch targets.
With typed=False every block type is empty; with typed=True blocks and tries also take the forms
(result i32) and (param i32) (result i32), branches to them carry a value, and every value produced is
folded into the trace.
"""

from __future__ import annotations

import random

HEADER = """(module
  (tag $e0 (param i32))
  (tag $e1 (param i64 i32))
  (tag $e2)
  (type $p (func (param i32) (result i32)))
  (global $trace (export "trace") (mut i64) (i64.const 0))
  (global $step (mut i32) (i32.const 0))
  (global $bits (mut i32) (i32.const 0))
  (func $mark (param i64)
    global.get $trace i64.const 31 i64.mul local.get 0 i64.add global.set $trace)
  ;; throws tag (k % 3) when the next bit of the input is set
  (func $maybe (param $k i32)
    global.get $bits global.get $step i32.shr_u i32.const 1 i32.and
    global.get $step i32.const 1 i32.add i32.const 31 i32.and global.set $step
    if
      local.get $k i32.const 3 i32.rem_u
      local.tee $k
      i32.eqz if local.get $k i32.const 7 i32.add throw $e0 end
      local.get $k i32.const 1 i32.eq if i64.const 9 local.get $k throw $e1 end
      throw $e2
    end)
"""


def kind(label: str) -> str:
    return label.split(":")[0]


class Gen:
    def __init__(self, rng: random.Random, typed: bool = False) -> None:
        self.rng = rng
        self.typed = typed
        self.marks = 0
        self.loops = 0  # each loop has its own counter local, so every loop runs at most twice per entry
        self.out: list[str] = []

    def mark(self) -> str:
        self.marks += 1
        return f"i64.const {self.marks} call $mark"

    def emit(self, s: str) -> None:
        self.out.append(s)

    # labels: list of "block" | "loop" | "try" | "catch" (a try whose handler we are in) | "func"
    def stmts(self, labels: list[str], depth: int, n: int) -> None:
        for _ in range(n):
            self.stmt(labels, depth)

    def stmt(self, labels: list[str], depth: int) -> None:
        r = self.rng
        choices = ["mark", "maybe", "maybe", "br_if"]
        if depth > 0:
            choices += ["block", "try", "try", "try_delegate", "loop", "if"]
        if any(kind(lab) == "catch" for lab in labels):
            choices += ["rethrow"]
        choices += ["throw"] if r.random() < 0.15 else []
        c = r.choice(choices)
        if c == "mark":
            self.emit(self.mark())
        elif c == "maybe":
            self.emit(f"i32.const {r.randrange(9)} call $maybe")
        elif c == "throw":
            self.emit(self.mark())
            self.emit(r.choice(["i32.const 3 throw $e0", "i64.const 4 i32.const 5 throw $e1", "throw $e2"]))
        elif c == "br_if":
            targets = [i for i, lab in enumerate(reversed(labels)) if kind(lab) != "loop"]
            d = r.choice(targets)
            typed_target = labels[len(labels) - 1 - d].endswith(":i")
            value = f"i32.const {r.randrange(100, 200)} " if typed_target else ""
            cond = f"global.get $step i32.const {r.randrange(1, 4)} i32.rem_u i32.eqz"
            self.emit(f"{self.mark()} {value}{cond} br_if {d}" + (" drop" if typed_target else ""))
        elif c == "rethrow":
            targets = [i for i, lab in enumerate(reversed(labels)) if kind(lab) == "catch"]
            self.emit(f"{self.mark()} rethrow {r.choice(targets)}")
        elif c == "block":
            shape = self.shape()
            self.open("block", shape)
            self.stmts(labels + ["block" + (":i" if shape else "")], depth - 1, r.randrange(1, 4))
            self.close(shape, "end")
        elif c == "loop":
            c_ = f"$c{self.loops}"
            self.loops += 1
            self.emit(f"i32.const 0 local.set {c_} loop")
            self.stmts(labels + ["loop"], depth - 1, r.randrange(1, 3))
            self.emit(f"local.get {c_} i32.const 1 i32.add local.tee {c_} i32.const 2 i32.lt_u br_if 0 end")
        elif c == "if":
            self.emit("global.get $step i32.const 1 i32.and if")
            self.stmts(labels + ["block"], depth - 1, r.randrange(1, 3))
            self.emit("else")
            self.stmts(labels + ["block"], depth - 1, r.randrange(0, 2))
            self.emit("end")
        elif c == "try":
            shape = self.shape()
            suffix = ":i" if shape else ""
            self.open("try", shape)
            self.stmts(labels + ["try" + suffix], depth - 1, r.randrange(1, 4))
            clauses = r.sample(["e0", "e1", "e2"], r.randrange(0, 3))
            for t in clauses:
                self.value(shape)
                self.emit(f"catch ${t}")
                self.emit({"e0": "i64.extend_i32_u call $mark", "e1": "drop call $mark", "e2": ""}[t])
                self.stmts(labels + ["catch" + suffix], depth - 1, r.randrange(0, 3))
            if r.random() < 0.6 or not clauses:
                self.value(shape)
                self.emit("catch_all")
                self.stmts(labels + ["catch" + suffix], depth - 1, r.randrange(0, 3))
            self.close(shape, "end")
        elif c == "try_delegate":
            shape = self.shape()
            self.open("try", shape)
            self.stmts(labels + ["try" + (":i" if shape else "")], depth - 1, r.randrange(1, 4))
            self.close(shape, f"delegate {r.randrange(len(labels))}")

    # Typed blocks: "" (empty), "result" ((result i32)) or "param" ((param i32) (result i32)).
    def shape(self) -> str:
        return self.rng.choice(["", "result", "param"]) if self.typed else ""

    def open(self, op: str, shape: str) -> None:
        if shape == "param":
            self.emit(f"i32.const {self.rng.randrange(300, 400)} {op} (type $p) i64.extend_i32_u call $mark")
        else:
            self.emit(op + (" (result i32)" if shape else ""))

    def value(self, shape: str) -> None:
        if shape:
            self.emit(f"i32.const {self.rng.randrange(500, 600)}")

    def close(self, shape: str, closer: str) -> None:
        self.value(shape)
        self.emit(closer)
        if shape:
            self.emit("i64.extend_i32_u call $mark")


def program(seed: int, funcs: int = 3, depth: int = 4, typed: bool = False) -> str:
    rng = random.Random(seed)
    parts = [HEADER]
    for i in range(funcs):
        g = Gen(rng, typed)
        g.marks = 1000 * (i + 1)
        g.stmts(["func"], depth, rng.randrange(2, 5))
        if i + 1 < funcs and rng.random() < 0.7:
            g.emit(f"call $f{i + 1}")
        counters = "".join(f" (local $c{k} i32)" for k in range(g.loops))
        parts.append(f"  (func $f{i}{counters}\n    " + "\n    ".join(g.out) + ")\n")
    parts.append("""  (func (export "run") (param i32) (result i64)
    i64.const 0 global.set $trace i32.const 0 global.set $step local.get 0 global.set $bits
    call $f0 global.get $trace))
""")
    return "".join(parts)
