;; WASI preview 1 program for the builtin:wasm tests: copies the file named by argv[1],
;; relative to the first preopened directory, to standard output; exits 1 if it cannot
;; open it.
(module
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  ;; 16 iovec, 24 count, 28 opened fd, 1024 pointers, 8192 strings, 32768 buffer
  (func $strlen (param $p i32) (result i32) (local $n i32)
    (block $done (loop $next
      (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $next)))
    (local.get $n))
  (func (export "_start") (local $path i32) (local $fd i32)
    (drop (call $args_get (i32.const 1024) (i32.const 8192)))
    (local.set $path (i32.load (i32.const 1028)))
    (if (call $path_open (i32.const 3) (i32.const 1) (local.get $path)
          (call $strlen (local.get $path)) (i32.const 0) (i64.const 2) (i64.const 0)
          (i32.const 0) (i32.const 28))
      (then (call $proc_exit (i32.const 1))))
    (local.set $fd (i32.load (i32.const 28)))
    (block $done (loop $next
      (i32.store (i32.const 16) (i32.const 32768))
      (i32.store (i32.const 20) (i32.const 16384))
      (drop (call $fd_read (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24)))
      (br_if $done (i32.eqz (i32.load (i32.const 24))))
      (i32.store (i32.const 20) (i32.load (i32.const 24)))
      (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
      (br $next)))
    (call $proc_exit (i32.const 0)))
)
