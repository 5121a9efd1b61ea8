// Package crashtest runs one of a test binary's own tests as a child
// process, for the tests that SIGKILL a queue and check what the next one
// recovers.
//
// # What it owns
//
// The child's life: starting it (the same binary, -test.run naming one
// test, and an environment variable the caller adds, by which that test
// knows to run its child half), reading its stdout line by line, killing it
// at a moment the test chooses (a delay, or a ready line), reading the
// signs of a crash (a panic, a fatal error, a data race) in its stderr, and
// reading a log file the child appended to (ReadLog). It is imported only
// by tests.
//
// # Invariants
//
// A Child is killed at most once, and only while it runs: a child that
// ended by itself is reported, never signalled. Every line the child wrote
// to stdout before it ended has been passed to the test's callback once
// End, Kill or KillAfter has returned. A line the kill cut short (a write
// is copied a page at a time, and SIGKILL can land between two pages) is
// never handed on, from stdout or from ReadLog. Where the binary cannot be
// re-executed (an emulated run), Start skips the test rather than failing
// it.
//
// # Concurrency contract
//
// A Child belongs to the test goroutine that started it: its methods are
// called from that goroutine. The stdout callback runs on one goroutine of
// its own, in the order of the lines; what it records may be read by the
// test once End, Kill or KillAfter has returned.
package crashtest
