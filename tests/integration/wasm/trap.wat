;; A WASI program that traps at once (an `unreachable` instruction), for the builtin:wasm tests.
(module
  (memory (export "memory") 1)
  (func (export "_start") unreachable)
)
