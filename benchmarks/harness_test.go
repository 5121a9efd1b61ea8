package benchmarks

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// batchSize is the batch the "end to end" consumers assemble before calling
// sendNoop; VineQueue's own BatchSize default is the same number.
const batchSize = 1000

// stuckAfter bounds the wait for a consumer: a contender that loses items
// fails the benchmark instead of hanging the run.
const stuckAfter = 3 * time.Minute

// scenario is one shape of work. Every contender gets exactly the same one.
type scenario struct {
	name      string
	producers func() int // evaluated at run time: GOMAXPROCS may be set by -cpu
	batch     bool       // consumer assembles batches of batchSize and calls sendNoop
}

func fixed(n int) func() int { return func() int { return n } }
func perP() int              { return runtime.GOMAXPROCS(0) }

// queueScenarios are the in-memory scenarios. The names are what
// cmd/benchtable and scripts/bench.sh select on; the chart plots the ones
// without a batching consumer against their producer count.
var queueScenarios = []scenario{
	{name: "1p", producers: fixed(1)},
	{name: "Pp", producers: perP},
	{name: "64g", producers: fixed(64)},
	{name: "1024g", producers: fixed(1024)},
	{name: "e2e-1p", producers: fixed(1), batch: true},
	{name: "e2e-Pp", producers: perP, batch: true},
}

// runConfig is what a contender needs to build a fresh instance for one run.
type runConfig struct {
	items     uint64 // total items the producers will send, = b.N
	producers int
	batch     bool
}

// tally is what a consumer saw: items received, the sum of their values (a
// checksum: producers send 1..items exactly once), and items a lossy design
// reported as overwritten.
type tally struct {
	got, sum, dropped uint64
	allocs            uint64 // heap allocations during the timed region, all goroutines
}

// instance is one contender instance for one run. produce and consume carry
// their own tight loops so that no interface or closure call sits on the
// per-item path.
type instance struct {
	// produce sends the values first+1 .. first+count, from one goroutine.
	produce func(first, count uint64)
	// consume runs on one goroutine and returns once want items were
	// received (or reported dropped by a lossy design).
	consume func(want uint64) tally
	// producersDone, if set, runs (timed) after every producer returned:
	// VineQueue flushes its rings here, the documented way to make the last
	// partial batch leave before FlushInterval.
	producersDone func() error
	// close releases the instance (not timed).
	close func()
}

// contender is one library under test.
type contender struct {
	name   string
	caveat string
	// absent, when set, says why this contender cannot run on this machine; the
	// benchmark then skips with that reason and the table lists it.
	absent string
	lossy  bool // reports dropped/item
	start  func(tb testing.TB, rc runConfig) instance
}

// contenders is filled by each adapter file's init, VineQueue first.
var contenders []contender

func register(c contender) {
	if c.name == "vinequeue" {
		contenders = append([]contender{c}, contenders...)
		return
	}
	contenders = append(contenders, c)
}

// sendNoop is the no-op Send of the end-to-end scenarios. It is not inlined so
// that every contender pays the same real call per batch.
//
//go:noinline
func sendNoop(ctx context.Context, batch []uint64) error { return nil }

// sink is the consumer side shared by the peers: per item it adds to the
// count and checksum, or, in the batching scenarios, appends to a batch that
// is checksummed and handed to sendNoop when full — the same work VineQueue's
// Send does in bench_vinequeue_test.go.
type sink struct {
	batch []uint64 // nil: per-item consumer
	t     tally
}

func newSink(batching bool) *sink {
	s := &sink{}
	if batching {
		s.batch = make([]uint64, 0, batchSize)
	}
	return s
}

func (s *sink) take(v uint64) {
	if s.batch == nil {
		s.t.got++
		s.t.sum += v
		return
	}
	s.batch = append(s.batch, v)
	if len(s.batch) == cap(s.batch) {
		s.flush()
	}
}

func (s *sink) flush() {
	var sum uint64
	for _, v := range s.batch {
		sum += v
	}
	_ = sendNoop(context.Background(), s.batch)
	s.t.sum += sum
	s.t.got += uint64(len(s.batch))
	s.batch = s.batch[:0]
}

// result returns the tally after flushing the last partial batch.
func (s *sink) result() tally {
	if len(s.batch) > 0 {
		s.flush()
	}
	return s.t
}

// wantSum is 1+2+...+n modulo 2^64, the checksum of a complete run.
func wantSum(n uint64) uint64 {
	if n%2 == 0 {
		return (n / 2) * (n + 1)
	}
	return n * ((n + 1) / 2)
}

// timer is the part of *testing.B that runItems drives; tests pass noTimer.
type timer interface {
	ResetTimer()
	StopTimer()
}

type noTimer struct{}

func (noTimer) ResetTimer() {}
func (noTimer) StopTimer()  {}

// runItems runs one scenario for one contender: n items split over the
// producers, timed from the release of the producers until the consumer has
// received the last item. It checks the count and the checksum.
func runItems(tb testing.TB, tm timer, c contender, sc scenario, n uint64) tally {
	producers := sc.producers()
	inst := c.start(tb, runConfig{items: n, producers: producers, batch: sc.batch})
	defer inst.close()

	start := make(chan struct{})
	var wg sync.WaitGroup
	first := uint64(0)
	for i := 0; i < producers; i++ {
		count := n / uint64(producers)
		if uint64(i) < n%uint64(producers) {
			count++
		}
		wg.Add(1)
		go func(first, count uint64) {
			defer wg.Done()
			<-start
			if count > 0 {
				inst.produce(first, count)
			}
		}(first, count)
		first += count
	}
	result := make(chan tally, 1)
	go func() {
		<-start
		result <- inst.consume(n)
	}()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	tm.ResetTimer()
	close(start)
	wg.Wait()
	if inst.producersDone != nil {
		if err := inst.producersDone(); err != nil {
			tb.Fatalf("%s: after producers: %v", c.name, err)
		}
	}
	var t tally
	select {
	case t = <-result:
	case <-time.After(stuckAfter):
		tb.Fatalf("%s: consumer still waiting after %v (%d items)", c.name, stuckAfter, n)
	}
	tm.StopTimer()
	runtime.ReadMemStats(&after)
	t.allocs = after.Mallocs - before.Mallocs

	if t.got+t.dropped != n {
		tb.Fatalf("%s: consumer saw %d items + %d dropped, want %d", c.name, t.got, t.dropped, n)
	}
	if t.dropped == 0 && t.sum != wantSum(n) {
		tb.Fatalf("%s: checksum %d, want %d: items lost or duplicated", c.name, t.sum, wantSum(n))
	}
	return t
}

func runQueue(b *testing.B, c contender, sc scenario) {
	if c.absent != "" {
		b.Skip("absent: " + c.absent)
	}
	b.ReportAllocs()
	n := uint64(b.N)
	t := runItems(b, b, c, sc, n)
	reportItems(b, n)
	// allocs/op is truncated to an integer by the testing package (0.99 → 0);
	// this is the exact figure.
	b.ReportMetric(float64(t.allocs)/float64(n), "allocs/item")
	if c.lossy {
		b.ReportMetric(float64(t.dropped)/float64(n), "dropped/item")
	}
}

// reportItems reports the per-item metrics every scenario shares.
func reportItems(b *testing.B, n uint64) {
	el := b.Elapsed()
	b.ReportMetric(float64(el.Nanoseconds())/float64(n), "ns/item")
	if s := el.Seconds(); s > 0 {
		b.ReportMetric(float64(n)/s, "items/s")
	}
}

// BenchmarkQueue is the in-memory tier: every scenario × every contender.
// Names are BenchmarkQueue/scenario=S/lib=L so that benchstat can pivot them.
func BenchmarkQueue(b *testing.B) {
	for _, sc := range queueScenarios {
		b.Run("scenario="+sc.name, func(b *testing.B) {
			for _, c := range contenders {
				b.Run("lib="+c.name, func(b *testing.B) { runQueue(b, c, sc) })
			}
		})
	}
}

// TestContenders runs every contender through every scenario with small
// item counts, so that `go test` (CI) proves each adapter delivers every item
// exactly once, without timing anything.
func TestContenders(t *testing.T) {
	for _, sc := range queueScenarios {
		for _, c := range contenders {
			t.Run(sc.name+"/"+c.name, func(t *testing.T) {
				if c.absent != "" {
					t.Skip("absent: " + c.absent)
				}
				for _, n := range []uint64{1, 7, 3000} {
					runItems(t, noTimer{}, c, sc, n)
				}
			})
		}
	}
}

// TestMain lists the contenders when asked (used by cmd/benchtable) and mutes
// the global logger: go-diodes logs every write collision through it, which
// would interleave with the benchmark output.
func TestMain(m *testing.M) {
	log.SetOutput(io.Discard)
	if os.Getenv("VINEBENCH_LIST") != "" {
		for _, c := range contenders {
			fmt.Printf("queue\t%s\t%s\t%s\n", c.name, c.absent, c.caveat)
		}
		for _, c := range walContenders {
			fmt.Printf("wal\t%s\t%s\t%s\n", c.name, c.absentReason(), c.caveat)
		}
		for _, c := range walContenders {
			why := c.absentReason()
			if why == "" && c.recover == nil {
				why = "no recovery adapter (recovery is measured on the wal package directly)"
			}
			fmt.Printf("recovery\t%s\t%s\t%s\n", c.name, why, "")
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
