;; wasm64 module using the legacy exception-handling opcodes (try/catch/throw, as -fwasm-exceptions AOS
;; builds do). handle: "t..." throws a tag inside try and catches it -> Output "caught:<payload>";
;; "u..." throws without a handler -> trap (uncaught exception) -> Error.
(module
  (tag $lj (param i64))
  (memory (export "memory") i64 2 16)
  (data (i64.const 4096) "{\"ok\":true,\"response\":{\"Output\":\"caught:42\"}}\00")
  (data (i64.const 8192) "{\"ok\":true,\"response\":{\"Output\":\"none\"}}\00")
  (global $brk (mut i64) (i64.const 16384))
  ;; HB-style: no stack allocator, the host allocates the handle() strings with malloc
  (func (export "malloc") (param $n i64) (result i64)
    (local $p i64)
    (local.set $p (global.get $brk))
    (global.set $brk (i64.and (i64.add (i64.add (local.get $p) (local.get $n)) (i64.const 15)) (i64.const -16)))
    (local.get $p))
  (func $thrower (param $v i64) (throw $lj (local.get $v)))
  (func (export "handle") (param $msg i64) (param $env i64) (result i64)
    (local $r i64)
    (if (i32.eq (i32.load8_u (local.get $msg)) (i32.const 117))
      (then (call $thrower (i64.const 1))))
    (local.set $r (i64.const 8192))
    (try
      (do (call $thrower (i64.const 42)))
      (catch $lj
        (if (i64.eq (i64.const 42)) (then (local.set $r (i64.const 4096))))))
    (local.get $r))
)
