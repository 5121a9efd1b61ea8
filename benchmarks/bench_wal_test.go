package benchmarks

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	diskqueue "github.com/nsqio/go-diskqueue"
	tidwall "github.com/tidwall/wal"
)

// itemSize is the payload of one durable append.
const itemSize = 100

// walScenario is a durable-append shape: producers goroutines append
// itemSize-byte payloads; the timer stops when every append has returned.
type walScenario struct {
	name      string
	producers int
}

var walScenarios = []walScenario{
	{name: "wal-1p", producers: 1},
	{name: "wal-64g", producers: 64},
}

// walInstance is one durable log for one run.
type walInstance struct {
	// append must be safe for concurrent use and return once p is as durable
	// as the contender's fsync policy makes it (see each caveat).
	append func(p []byte) error
	close  func() error
}

// walContender is one durable log under test. Recovery, when set, builds a log
// of n records outside the timer (prepare) and then, timed, opens it and
// reads every record back (recover returns the number of payload bytes read).
type walContender struct {
	name   string
	caveat string
	absent string
	// probe, when set, is asked at run time and returns a reason the
	// contender cannot run (e.g. a tier not built yet), or "".
	probe   func() string
	open    func(tb testing.TB, dir string) walInstance
	prepare func(tb testing.TB, dir string, n int)
	recover func(tb testing.TB, dir string, n int) (records int)
}

// absentReason is why c cannot run here, or "".
func (c walContender) absentReason() string {
	if c.absent == "" && c.probe != nil {
		return c.probe()
	}
	return c.absent
}

// walContenders is filled by init functions, VineQueue's first.
var walContenders []walContender

func registerWAL(c walContender) {
	if len(c.name) >= 9 && c.name[:9] == "vinequeue" {
		walContenders = append([]walContender{c}, walContenders...)
		return
	}
	walContenders = append(walContenders, c)
}

func init() {
	registerWAL(walContender{
		name: "tidwall-wal",
		caveat: "tidwall/wal v1.2.1, NoSync=false: Write fsyncs before it returns, one record per " +
			"fsync, no group commit; Write needs the next index, so appends serialise under one mutex",
		open:    openTidwall,
		prepare: prepareTidwall,
		recover: recoverTidwall,
	})
	registerWAL(walContender{
		name: "go-diskqueue",
		caveat: "nsqio/go-diskqueue v1.1.0, syncEvery=1: the I/O loop fsyncs the data file and rewrites+fsyncs " +
			"the metadata file after every write, but Put returns before that fsync (the next Put waits for it) — " +
			"slightly kinder than durable-on-return; one I/O goroutine serialises all writers",
		open:    openDiskqueue,
		prepare: prepareDiskqueue,
		recover: recoverDiskqueue,
	})
}

// payload returns a fresh itemSize-byte item stamped with v and filled with
// xorshift noise, so that a compressing log gains nothing a real (already
// compact) event would not give it. Every contender gets a fresh slice per
// append, since a queue may keep it after Enqueue.
func payload(v uint64) []byte {
	p := make([]byte, itemSize)
	x := v*0x9E3779B97F4A7C15 | 1
	for i := 8; i+8 <= itemSize; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(p[i:], x)
	}
	binary.LittleEndian.PutUint64(p, v)
	return p
}

func openTidwall(tb testing.TB, dir string) walInstance {
	opts := *tidwall.DefaultOptions
	opts.NoSync = false
	l, err := tidwall.Open(dir, &opts)
	if err != nil {
		tb.Fatalf("tidwall.Open: %v", err)
	}
	last, err := l.LastIndex()
	if err != nil {
		tb.Fatalf("tidwall LastIndex: %v", err)
	}
	var mu sync.Mutex
	return walInstance{
		append: func(p []byte) error {
			mu.Lock()
			defer mu.Unlock()
			if err := l.Write(last+1, p); err != nil {
				return err
			}
			last++
			return nil
		},
		close: l.Close,
	}
}

func prepareTidwall(tb testing.TB, dir string, n int) {
	opts := *tidwall.DefaultOptions
	opts.NoSync = true // preparation only; Close syncs
	l, err := tidwall.Open(dir, &opts)
	if err != nil {
		tb.Fatalf("tidwall.Open: %v", err)
	}
	var batch tidwall.Batch
	for i := 1; i <= n; i++ {
		batch.Write(uint64(i), payload(uint64(i)))
		if i%10000 == 0 || i == n {
			if err := l.WriteBatch(&batch); err != nil {
				tb.Fatalf("tidwall WriteBatch: %v", err)
			}
			batch.Clear()
		}
	}
	if err := l.Close(); err != nil {
		tb.Fatalf("tidwall Close: %v", err)
	}
}

func recoverTidwall(tb testing.TB, dir string, n int) int {
	opts := *tidwall.DefaultOptions
	opts.NoCopy = true
	l, err := tidwall.Open(dir, &opts)
	if err != nil {
		tb.Fatalf("tidwall.Open: %v", err)
	}
	defer l.Close()
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	got := 0
	for i := first; i <= last && i != 0; i++ {
		p, err := l.Read(i)
		if err != nil {
			tb.Fatalf("tidwall Read %d: %v", i, err)
		}
		if len(p) != itemSize {
			tb.Fatalf("tidwall Read %d: %d bytes", i, len(p))
		}
		got++
	}
	return got
}

func newDiskqueue(dir string, syncEvery int64) diskqueue.Interface {
	return diskqueue.New("bench", dir, 64<<20, 0, 1<<20, syncEvery, time.Second,
		func(diskqueue.LogLevel, string, ...interface{}) {})
}

func openDiskqueue(tb testing.TB, dir string) walInstance {
	dq := newDiskqueue(dir, 1)
	return walInstance{append: dq.Put, close: dq.Close}
}

func prepareDiskqueue(tb testing.TB, dir string, n int) {
	dq := newDiskqueue(dir, 1<<30) // preparation only; Close syncs
	for i := 1; i <= n; i++ {
		if err := dq.Put(payload(uint64(i))); err != nil {
			tb.Fatalf("diskqueue Put: %v", err)
		}
	}
	if err := dq.Close(); err != nil {
		tb.Fatalf("diskqueue Close: %v", err)
	}
}

func recoverDiskqueue(tb testing.TB, dir string, n int) int {
	dq := newDiskqueue(dir, 1<<30)
	defer dq.Close()
	got := 0
	for got < n {
		select {
		case p := <-dq.ReadChan():
			if len(p) != itemSize {
				tb.Fatalf("diskqueue read: %d bytes", len(p))
			}
			got++
		case <-time.After(stuckAfter):
			tb.Fatalf("diskqueue: %d of %d records after %v", got, n, stuckAfter)
		}
	}
	return got
}

// runWAL appends n payloads from sc.producers goroutines and returns once all
// appends returned, with the latency of every append; it fails on any append
// error. Reading the clock twice per append costs ~50 ns against appends of
// tens of microseconds or more, the same for every contender.
func runWAL(tb testing.TB, tm timer, c walContender, sc walScenario, n uint64) []time.Duration {
	w := c.open(tb, tb.TempDir())
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, sc.producers)
	lats := make([][]time.Duration, sc.producers)
	first := uint64(0)
	for i := 0; i < sc.producers; i++ {
		count := n / uint64(sc.producers)
		if uint64(i) < n%uint64(sc.producers) {
			count++
		}
		lats[i] = make([]time.Duration, 0, count)
		wg.Add(1)
		go func(lat *[]time.Duration, first, count uint64) {
			defer wg.Done()
			<-start
			for v := first + 1; v <= first+count; v++ {
				p := payload(v)
				t0 := time.Now()
				if err := w.append(p); err != nil {
					errs <- fmt.Errorf("append %d: %w", v, err)
					return
				}
				*lat = append(*lat, time.Since(t0))
			}
		}(&lats[i], first, count)
		first += count
	}
	tm.ResetTimer()
	close(start)
	wg.Wait()
	tm.StopTimer()
	close(errs)
	for err := range errs {
		tb.Fatalf("%s: %v", c.name, err)
	}
	if err := w.close(); err != nil {
		tb.Fatalf("%s: close: %v", c.name, err)
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	return all
}

// quantile of sorted latencies, in microseconds.
func quantileMicros(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(int(q*float64(len(sorted))), len(sorted)-1)
	return float64(sorted[i]) / float64(time.Microsecond)
}

// BenchmarkWAL is the durable tier: b.N appends of itemSize bytes, each
// durable by the contender's policy when its append returns.
func BenchmarkWAL(b *testing.B) {
	for _, sc := range walScenarios {
		b.Run("scenario="+sc.name, func(b *testing.B) {
			for _, c := range walContenders {
				b.Run("lib="+c.name, func(b *testing.B) {
					if why := c.absentReason(); why != "" {
						b.Skip("absent: " + why)
					}
					b.ReportAllocs()
					b.SetBytes(itemSize)
					lat := runWAL(b, b, c, sc, uint64(b.N))
					reportItems(b, uint64(b.N))
					b.ReportMetric(quantileMicros(lat, 0.50), "p50-µs")
					b.ReportMetric(quantileMicros(lat, 0.99), "p99-µs")
				})
			}
		})
	}
}

// BenchmarkRecovery opens a log of b.N itemSize-byte records (written outside
// the timer) and reads every record back. MB/s is payload bytes per second.
func BenchmarkRecovery(b *testing.B) {
	b.Run("scenario=recovery", func(b *testing.B) {
		for _, c := range walContenders {
			b.Run("lib="+c.name, func(b *testing.B) {
				if why := c.absentReason(); why != "" {
					b.Skip("absent: " + why)
				}
				if c.recover == nil {
					b.Skip("absent: no recovery adapter")
				}
				dir := b.TempDir()
				c.prepare(b, dir, b.N)
				b.ReportAllocs()
				b.SetBytes(itemSize)
				b.ResetTimer()
				got := c.recover(b, dir, b.N)
				b.StopTimer()
				if got != b.N {
					b.Fatalf("%s: recovered %d records, want %d", c.name, got, b.N)
				}
				reportItems(b, uint64(b.N))
			})
		}
	})
}

// TestWALContenders proves every durable adapter appends and recovers a
// small run (fsync included, so n stays small).
func TestWALContenders(t *testing.T) {
	for _, c := range walContenders {
		t.Run(c.name, func(t *testing.T) {
			if why := c.absentReason(); why != "" {
				t.Skip("absent: " + why)
			}
			for _, sc := range walScenarios {
				runWAL(t, noTimer{}, c, sc, 100)
			}
			if c.recover != nil {
				dir := t.TempDir()
				c.prepare(t, dir, 2500)
				if got := c.recover(t, dir, 2500); got != 2500 {
					t.Fatalf("recovered %d, want 2500", got)
				}
			}
		})
	}
}
