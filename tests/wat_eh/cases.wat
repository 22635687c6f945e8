;; Hand-written legacy exception-handling cases. Every export takes one i32 and is run on a fresh instance;
;; the translated module must behave exactly like the original run natively by V8 (node) and like
;; binaryen's --translate-to-exnref output.
(module
  (type $ii (func (param i32) (result i32)))
  (type $i_ii (func (param i32) (result i32 i32)))
  (type $ii_i (func (param i32 i32) (result i32)))
  (tag $e (param i32))
  (tag $pair (param i64 i32))
  (tag $none)
  (global $trace (export "trace") (mut i64) (i64.const 0))
  (func $mark (param i64)
    global.get $trace i64.const 10 i64.mul local.get 0 i64.add global.set $trace)
  ;; throws $e(x) if x & 1, $pair(x, x+1) if x & 2, $none if x & 4 (checked in that order)
  (func $thrower (param i32)
    local.get 0 i32.const 1 i32.and if local.get 0 throw $e end
    local.get 0 i32.const 2 i32.and if local.get 0 i64.extend_i32_u local.get 0 i32.const 1 i32.add throw $pair end
    local.get 0 i32.const 4 i32.and if throw $none end)

  (func (export "basic") (param i32) (result i32)
    try (result i32)
      local.get 0 call $thrower
      i32.const 100
    catch $e
      i32.const 1000 i32.add
    catch $pair
      i64.extend_i32_u i64.add i32.wrap_i64
    catch_all
      i32.const -1
    end)

  (func (export "no_handlers") (param i32) (result i32)
    try (result i32)
      local.get 0 call $thrower i32.const 7
    end)

  (func (export "only_catch_all") (param i32) (result i32)
    (local $x i32)
    try
      local.get 0 call $thrower
      i32.const 1 local.set $x
    catch_all
      i32.const 2 local.set $x
    end
    local.get $x)

  (func (export "rethrow_nested") (param i32) (result i32)
    (local $r i32)
    try
      try
        local.get 0 call $thrower
      catch $e
        i32.const 5 local.set $r
        drop
        rethrow 0
      catch_all
        i32.const 9 local.set $r
        rethrow 0
      end
    catch $e
      local.get $r i32.add i32.const 7 i32.add local.set $r
    catch_all
      local.get $r i32.const 100 i32.add local.set $r
    end
    local.get $r)

  ;; rethrow of an outer exception from inside a nested try in the handler (rethrow 1 skips the inner catch)
  (func (export "rethrow_outer") (param i32) (result i32)
    (local $r i32)
    try
      try
        local.get 0 call $thrower
      catch $e
        drop
        try
          i32.const 1 throw $e
        catch $e
          local.set $r
          rethrow 1
        end
      end
    catch $e
      local.get $r i32.const 10 i32.mul i32.add local.set $r
    catch $none
      i32.const 77 local.set $r
    end
    local.get $r)

  (func (export "rethrow_pair") (param i32) (result i64)
    try (result i64)
      try (result i64)
        local.get 0 call $thrower i64.const 0
      catch $pair
        i64.extend_i32_u i64.add i64.const 1 call $mark rethrow 0
      end
    catch $pair
      i64.extend_i32_u i64.const 1000 i64.mul i64.add
    catch_all
      i64.const -5
    end)

  (func (export "delegate_outer") (param i32) (result i32)
    try (result i32)
      try
        try
          local.get 0 call $thrower
        delegate 1
      catch_all
        i32.const 11 return
      end
      i32.const 0
    catch $e
      i32.const 22 i32.add
    catch_all
      i32.const 33
    end)

  (func (export "delegate_caller") (param i32) (result i32)
    try (result i32)
      try
        local.get 0 call $thrower
      delegate 1
      i32.const 3
    catch_all
      i32.const 4
    end)

  (func $deleg_fn (param i32) (result i32)
    try
      local.get 0 call $thrower
    delegate 0
    i32.const 1)
  (func (export "delegate_fn") (param i32) (result i32)
    try (result i32)
      local.get 0 call $deleg_fn
    catch_all
      i32.const 2
    end)

  ;; delegate to a block label inside a try: goes to that try's handlers
  (func (export "delegate_block") (param i32) (result i32)
    try (result i32)
      block
        try
          local.get 0 call $thrower
        delegate 0
      end
      i32.const 5
    catch $e
      drop i32.const 6
    catch_all
      i32.const 8
    end)

  ;; delegate from inside a handler to the try that owns the handler: the exception goes further out
  (func (export "delegate_from_handler") (param i32) (result i32)
    try (result i32)
      try (result i32)
        i32.const 1 throw $e
      catch $e
        drop
        try
          local.get 0 call $thrower
        delegate 0
        i32.const 40
      catch_all
        i32.const 41
      end
    catch_all
      i32.const 42
    end)

  ;; delegate chains through another try-delegate
  (func (export "delegate_chain") (param i32) (result i32)
    try (result i32)
      try
        try
          try
            local.get 0 call $thrower
          delegate 0
        delegate 1
      catch_all
        i64.const 1 call $mark
      end
      i32.const 50
    catch_all
      i32.const 51
    end)

  (func (export "branches") (param i32) (result i32)
    (local $r i32)
    block $out
      block $mid
        try
          local.get 0 i32.const 8 i32.and br_if $out
          local.get 0 i32.const 16 i32.and br_if $mid
          local.get 0 call $thrower
          local.get 0 i32.const 3 i32.rem_u br_table 0 $mid $out
        catch_all
          i32.const 3 local.set $r
          local.get 0 i32.const 2 i32.and br_if $out
          br 0
        end
        i32.const 1 local.get $r i32.add local.set $r
        br $out
      end
      i32.const 10 local.get $r i32.add local.set $r
    end
    local.get 0 i32.const 32 i32.and if
      try
        i32.const 100 local.set $r
        local.get $r return
      catch_all
      end
    end
    local.get $r)

  (func (export "loop_rethrow") (param i32) (result i32)
    (local $i i32) (local $n i32)
    try
      loop $l
        try
          local.get $i local.get 0 i32.xor call $thrower
        catch_all
          local.get $n i32.const 1 i32.add local.tee $n
          i32.const 3 i32.ge_u if rethrow 1 end
        end
        local.get $i i32.const 1 i32.add local.tee $i i32.const 8 i32.lt_u br_if $l
      end
    catch_all
      local.get $n i32.const 1000 i32.add local.set $n
    end
    local.get $n)

  (func (export "multivalue") (param i32) (result i32 i32)
    local.get 0
    try (type $i_ii)
      local.tee 0 call $thrower
      local.get 0 i32.const 2
    catch $e
      i32.const 3
    catch $pair
      i64.extend_i32_u i64.add i32.wrap_i64 i32.const 4
    catch_all
      i32.const 0 i32.const 5
    end)

  (func (export "block_params") (param i32) (result i32)
    local.get 0
    i32.const 9
    try (type $ii_i)
      i32.add
      local.get 0 call $thrower
    catch $e
      i32.const -3 i32.add
    catch_all
      i32.const -4
    end)

  (func (export "params_locals") (param i32) (result i32)
    (local i64 f32 i32)
    i32.const 5 local.set 3
    try
      try
        local.get 0 call $thrower
      catch_all
        local.get 3 i32.const 1 i32.add local.set 3
        rethrow 0
      end
    catch $none
      local.get 3 i32.const 10 i32.add local.set 3
    catch_all
      local.get 3 i32.const 20 i32.add local.set 3
    end
    local.get 3)

  (func (export "uncaught") (param i32) (result i32)
    try (result i32)
      local.get 0 call $thrower i32.const 1
    catch $none
      i32.const 2
    end)

  (func (export "throw_in_handler") (param i32) (result i32)
    try (result i32)
      try (result i32)
        local.get 0 call $thrower i32.const 1
      catch_all
        i64.const 2 call $mark
        i32.const 0 throw $e
      end
    catch $e
      i32.const 3 i32.add
    end)
)
