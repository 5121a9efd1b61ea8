// Package benchmarks measures VineQueue side by side with peer libraries.
//
// It is its own module so that the peers (xsync, Workiva, go-diodes,
// bytedance/gopkg, tidwall/wal, go-diskqueue, cpuid for the machine line)
// never enter the core go.mod; a replace directive points at the root module.
//
// What it owns: the scenarios (bench_test.go), one adapter per contender, and
// two programs: cmd/benchtable turns `go test -bench` output into the table
// and the SVG chart, cmd/soak runs sustained mixed load and checks delivery.
//
// Rules every scenario follows, for every contender:
//   - b.N is the number of items, so ns/op is ns/item; each run also reports
//     ns/item and items/s with b.ReportMetric.
//   - items are uint64; producers are started before the timer and released
//     together; the timer stops only once the consumer has received every
//     item, and the count and the sum of the values are checked.
//   - one consumer goroutine, unless the contender's design decides otherwise
//     (VineQueue runs its own batcher and one Send worker).
//
// Caveats for uneven comparisons live next to each contender (caveat fields)
// and in README.md; cmd/benchtable prints them under the table.
//
// The package has no non-test code besides this file: `go test -bench` is the
// entry point, normally through scripts/bench.sh (make bench).
package benchmarks
