// Package prefetch asks the CPU for cache lines before a store needs them.
//
// A line that another core (or memory) holds must be fetched before a store
// to it completes, and the store waits for it. ForWrite asks for the lines
// of a range in a writable state and returns at once, so that the transfers
// overlap each other and whatever the caller does meanwhile.
//
// It owns one function, ForWrite: an instruction per line in assembly on
// amd64 (PREFETCHW) and arm64 (PRFM PSTL1KEEP), nothing elsewhere or with the
// purego tag. A prefetch is only a hint: it never changes memory, never
// faults (any address may be given, even past the end of an object), takes
// no lock and never blocks, so it is safe while pinned and from any
// goroutine.
package prefetch
