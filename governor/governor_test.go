package governor

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a manually advanced clock for the warning rate limit and the
// limit re-read interval.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// recordingHandler keeps every record logged through it.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

// count returns how many records at level have msg containing substr.
func (h *recordingHandler) count(level slog.Level, substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level == level && strings.Contains(r.Message, substr) {
			n++
		}
	}
	return n
}

// attr returns the value of key in the last record whose message contains substr.
func (h *recordingHandler) attr(substr, key string) (slog.Value, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.records) - 1; i >= 0; i-- {
		r := h.records[i]
		if !strings.Contains(r.Message, substr) {
			continue
		}
		var v slog.Value
		found := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				v, found = a.Value, true
				return false
			}
			return true
		})
		return v, found
	}
	return slog.Value{}, false
}

// transition is one OnLevelChange call.
type transition struct {
	from, to Level
}

// transitionLog records OnLevelChange calls.
type transitionLog struct {
	mu  sync.Mutex
	got []transition
}

func (l *transitionLog) hook(from, to Level) {
	l.mu.Lock()
	l.got = append(l.got, transition{from, to})
	l.mu.Unlock()
}

func (l *transitionLog) snapshot() []transition {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]transition(nil), l.got...)
}

func mustNew(t testing.TB, opts Options) *Governor {
	t.Helper()
	g, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

// quiesce waits until the governor's goroutines have acted on every level
// change so far: waiters woken, every change announced.
func quiesce(t testing.TB, g *Governor) {
	t.Helper()
	eventually(t, "announcements to catch up", func() bool {
		g.Settle()
		st := g.state.Load()
		return g.watched.Load() == st && g.announced.Load() == st>>2
	})
}

// churn runs n goroutines that each, iters times, Add a random amount in
// [lo, lo+span) and Sub it again (settling after the Sub, as a sender
// would, when settle is set), and waits for them: usage ends where it
// started.
func churn(g *Governor, n, iters int, lo, span int64, settle bool) {
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for range iters {
				n := lo + r.Int64N(span)
				g.Add(n) // pinned in the queue: atomics only
				if r.IntN(4) == 0 {
					runtime.Gosched()
				}
				g.Sub(n) // a sender finishing a batch
				if settle {
					g.Settle()
				}
			}
		}()
	}
	wg.Wait()
}

// step does in the calling goroutine what the governor's goroutines do
// once each: for governors built with manual, under a fake clock.
func step(g *Governor) {
	g.watchOnce()
	g.announceOnce()
}

// checkChain fails unless the transitions chain from Normal (each from is
// the previous to, none is a no-op) and end at last.
func checkChain(t testing.TB, got []transition, last Level) {
	t.Helper()
	prev := LevelNormal
	for i, tr := range got {
		if tr.from != prev || tr.from == tr.to {
			t.Fatalf("transition %d = %v does not chain from %v", i, tr, prev)
		}
		prev = tr.to
	}
	if prev != last {
		t.Fatalf("last reported level %v, want %v", prev, last)
	}
}

// With Limit 1000 and the defaults: Soft enters at 800 and leaves below 750;
// Hard enters at 950 and leaves below 900.
func TestLevelsHysteresis(t *testing.T) {
	var tl transitionLog
	g := mustNew(t, Options{Limit: 1000, OnLevelChange: tl.hook})
	if s := g.Stats(); s.Soft != 800 || s.Hard != 950 || s.Source != SourceConfig || s.Limit != 1000 {
		t.Fatalf("stats %+v", s)
	}
	steps := []struct {
		add  int64
		want Level
	}{
		{799, LevelNormal}, // 799
		{1, LevelSoft},     // 800: enter Soft
		{-40, LevelSoft},   // 760: above 750, stay
		{-10, LevelSoft},   // 750: still not below 750
		{-1, LevelNormal},  // 749: leave Soft
		{50, LevelNormal},  // 799
		{151, LevelHard},   // 950: Normal straight to Hard
		{-50, LevelHard},   // 900: stay Hard
		{-1, LevelSoft},    // 899: leave Hard for Soft
		{50, LevelSoft},    // 949: Hard needs 950 again
		{1, LevelHard},     // 950
		{-950, LevelNormal},
		{5000, LevelHard}, // over the limit
		{-5000, LevelNormal},
	}
	used := int64(0)
	for i, st := range steps {
		used += st.add
		if got := g.Add(st.add); got != st.want {
			t.Fatalf("step %d: Add(%d) at %d = %v, want %v", i, st.add, used, got, st.want)
		}
		if got := g.Level(); got != st.want {
			t.Fatalf("step %d: Level() = %v, want %v", i, got, st.want)
		}
	}
	want := []transition{
		{LevelNormal, LevelSoft}, {LevelSoft, LevelNormal},
		{LevelNormal, LevelHard}, {LevelHard, LevelSoft}, {LevelSoft, LevelHard}, {LevelHard, LevelNormal},
		{LevelNormal, LevelHard}, {LevelHard, LevelNormal},
	}
	quiesce(t, g) // announced by the governor's goroutine, not by Add
	got := tl.snapshot()
	if len(got) != len(want) {
		t.Fatalf("transitions %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("transition %d = %v, want %v (all: %v)", i, got[i], want[i], got)
		}
	}
	if g.Sub(0) != LevelNormal || g.Stats().BytesHeld != 0 {
		t.Fatalf("stats %+v", g.Stats())
	}
}

func TestHysteresisDisabled(t *testing.T) {
	g := mustNew(t, Options{Limit: 100, Soft: 0.5, Hard: 0.9, Hysteresis: -1})
	if g.Add(50) != LevelSoft || g.Add(-1) != LevelNormal || g.Add(41) != LevelHard || g.Add(-1) != LevelSoft {
		t.Fatalf("without hysteresis levels should follow the thresholds exactly: %+v", g.Stats())
	}
}

func TestDelay(t *testing.T) {
	g := mustNew(t, Options{Limit: 1000, MinDelay: 100 * time.Microsecond, MaxDelay: 1100 * time.Microsecond})
	if d := g.Delay(); d != 0 {
		t.Fatalf("Normal: delay %v", d)
	}
	g.Add(800) // Soft at its threshold
	if d := g.Delay(); d != 100*time.Microsecond {
		t.Fatalf("entering Soft: delay %v", d)
	}
	g.Add(75) // half way from 800 to 950
	if d := g.Delay(); d != 600*time.Microsecond {
		t.Fatalf("half way: delay %v", d)
	}
	prev := g.Delay()
	for g.Level() == LevelSoft {
		g.Add(10)
		if d := g.Delay(); d < prev {
			t.Fatalf("delay fell from %v to %v while usage rose", prev, d)
		} else {
			prev = d
		}
	}
	if d := g.Delay(); d != 1100*time.Microsecond {
		t.Fatalf("Hard: delay %v", d)
	}
	g.Add(-200) // 755: Soft by hysteresis, below the soft threshold
	if g.Level() != LevelSoft || g.Delay() != 100*time.Microsecond {
		t.Fatalf("hysteresis band: level %v delay %v", g.Level(), g.Delay())
	}
}

func TestDelayDefaults(t *testing.T) {
	g := mustNew(t, Options{Limit: 1 << 30})
	g.Add(1 << 30)
	if g.Delay() != DefaultMaxDelay {
		t.Fatalf("delay %v", g.Delay())
	}
}

func TestWarningRateLimited(t *testing.T) {
	clk := newFakeClock()
	h := &recordingHandler{}
	g := mustNew(t, Options{Limit: 1000, Logger: slog.New(h), WarnInterval: time.Minute, now: clk.now, manual: true})

	g.Add(800) // Soft
	if n := h.count(slog.LevelWarn, "memory pressure"); n != 0 {
		t.Fatalf("Add logged %d warnings itself", n)
	}
	step(g)
	if n := h.count(slog.LevelWarn, "memory pressure"); n != 1 {
		t.Fatalf("entering Soft: %d warnings, want 1", n)
	}
	if v, ok := h.attr("memory pressure", "level"); !ok || v.String() != "soft" {
		t.Fatalf("level attr %v %v", v, ok)
	}
	// Flapping within the interval: no new warning, but one "relieved".
	for range 5 {
		g.Add(-100)
		g.Add(100)
		step(g)
	}
	if n := h.count(slog.LevelWarn, "memory pressure"); n != 1 {
		t.Fatalf("flapping: %d warnings, want 1", n)
	}
	if n := h.count(slog.LevelInfo, "relieved"); n != 1 {
		t.Fatalf("%d relieved messages, want 1 (only after a warning)", n)
	}
	// Hard has its own budget: reported at once.
	g.Add(150)
	step(g)
	if n := h.count(slog.LevelWarn, "memory pressure"); n != 2 {
		t.Fatalf("entering Hard: %d warnings, want 2", n)
	}
	if v, _ := h.attr("memory pressure", "level"); v.String() != "hard" {
		t.Fatalf("level attr %v", v)
	}
	// Still Hard after the interval: Refresh repeats the warning once.
	step(g)
	clk.advance(time.Minute)
	step(g)
	step(g)
	if n := h.count(slog.LevelWarn, "memory pressure"); n != 3 {
		t.Fatalf("after the interval: %d warnings, want 3", n)
	}
	if v, _ := h.attr("memory pressure", "limit"); v.Int64() != 1000 {
		t.Fatalf("limit attr %v", v)
	}
	g.Add(-1000)
	step(g)
	if n := h.count(slog.LevelInfo, "relieved"); n != 2 {
		t.Fatalf("%d relieved messages, want 2", n)
	}
}

func TestWaitBelowSoft(t *testing.T) {
	g := mustNew(t, Options{Limit: 1000})
	if err := g.WaitBelowSoft(context.Background()); err != nil {
		t.Fatalf("Normal: %v", err)
	}

	g.Add(1000) // Hard
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.WaitBelowSoft(ctx) }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel2()
	if err := g.WaitBelowSoft(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}

	// Many waiters, released only when the level reaches Normal.
	const waiters = 16
	var started, done sync.WaitGroup
	var returned atomic.Int32
	started.Add(waiters)
	done.Add(waiters)
	for range waiters {
		go func() {
			defer done.Done()
			started.Done()
			if err := g.WaitBelowSoft(context.Background()); err != nil {
				t.Errorf("waiter: %v", err)
			}
			if g.Level() == LevelHard {
				t.Errorf("waiter released at Hard")
			}
			returned.Add(1)
		}()
	}
	started.Wait()
	g.Add(-100) // 900: still Hard (hysteresis)
	g.Add(-120) // 780: Soft, not yet Normal
	if g.Level() != LevelSoft {
		t.Fatalf("level %v", g.Level())
	}
	if n := returned.Load(); n != 0 {
		t.Fatalf("%d waiters returned at Soft", n)
	}
	g.Add(-100) // 680: Normal
	g.Settle()  // as a sender does after Sub
	done.Wait()
}

func TestWaitBelowSoftClose(t *testing.T) {
	g := mustNew(t, Options{Limit: 1000})
	g.Add(1000)
	errc := make(chan error, 1)
	go func() { errc <- g.WaitBelowSoft(context.Background()) }()
	g.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if g.Add(-1000) != LevelNormal || g.WaitBelowSoft(context.Background()) != nil {
		t.Fatal("Add and WaitBelowSoft should keep working after Close at Normal")
	}
}

// TestHookReentrant: the hook calls back into the governor, including an Add
// that changes the level again; nothing deadlocks and the reported chain
// stays consistent.
func TestHookReentrant(t *testing.T) {
	var g *Governor
	var tl transitionLog
	hook := func(from, to Level) {
		tl.hook(from, to)
		_ = g.Stats()
		_ = g.Delay()
		_ = g.Level()
		if to == LevelHard {
			g.Add(-1000) // the hook itself relieves the pressure
		}
	}
	g = mustNew(t, Options{Limit: 1000, OnLevelChange: hook})
	g.Add(1000)
	eventually(t, "the hook to run twice", func() bool { return len(tl.snapshot()) == 2 })
	quiesce(t, g)
	got := tl.snapshot()
	want := []transition{{LevelNormal, LevelHard}, {LevelHard, LevelNormal}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("transitions %v, want %v", got, want)
	}
	if g.Level() != LevelNormal {
		t.Fatalf("level %v", g.Level())
	}
}

// TestConcurrentAddSub: many goroutines add and subtract while others read;
// afterwards the level must agree with the (zero) usage and the reported
// transitions must chain (each from = the previous to).
func TestConcurrentAddSub(t *testing.T) {
	var tl transitionLog
	g := mustNew(t, Options{Limit: 3000, OnLevelChange: tl.hook})
	workers := 4 * runtime.GOMAXPROCS(0)
	iters := 2000
	if testing.Short() {
		iters = 500
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = g.Level()
				_ = g.Delay()
				_ = g.Stats()
				g.Refresh()
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Microsecond)
				_ = g.WaitBelowSoft(ctx)
				cancel()
			}
		}()
	}
	churn(g, workers, iters, 0, 1000, false)
	close(stop)
	readers.Wait()

	if s := g.Stats(); s.BytesHeld != 0 || s.Level != LevelNormal {
		t.Fatalf("after balanced adds: %+v", s)
	}
	quiesce(t, g)
	got := tl.snapshot()
	checkChain(t, got, LevelNormal)
	t.Logf("%d workers x %d iterations, %d transitions", workers, iters, len(got))
}

// writeTree fabricates a cgroup v2 host under a temporary root whose
// memory.max the test can rewrite, as vertical autoscaling would.
func writeTree(t *testing.T, memoryMax string) (root string, setMax func(string)) {
	t.Helper()
	root = t.TempDir()
	write := func(rel, data string) {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/self/mountinfo", "31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n")
	write("proc/self/cgroup", "0::/app\n")
	write("proc/meminfo", "MemTotal: 16777216 kB\n")
	write("sys/fs/cgroup/app/memory.max", memoryMax)
	return root, func(v string) { write("sys/fs/cgroup/app/memory.max", v) }
}

func TestRefreshRereadsLimit(t *testing.T) {
	root, setMax := writeTree(t, "1073741824\n")
	clk := newFakeClock()
	det := newDetector(root)
	det.goMemLimit = func() int64 { return math.MaxInt64 }
	var tl transitionLog
	// Queue bytes only, so that the figures below do not depend on the
	// test process's own memory.
	g := mustNew(t, Options{Measure: MeasureQueueBytes, OnLevelChange: tl.hook, detect: det.detect, now: clk.now, manual: true})
	if l := g.Limit(); l.Bytes != gib || l.Source != SourceCgroup2 || l.Path != "/sys/fs/cgroup/app/memory.max" {
		t.Fatalf("limit %v", l)
	}
	g.Add(700 * mib)
	if g.Level() != LevelNormal {
		t.Fatalf("level %v", g.Level())
	}

	setMax("800000000\n") // scaled down: 700 MiB is now ~92 %
	step(g)               // within RefreshInterval: not re-read yet
	if g.Limit().Bytes != gib {
		t.Fatalf("limit re-read too early: %v", g.Limit())
	}
	clk.advance(time.Second)
	step(g)
	if g.Limit().Bytes != 800000000 || g.Level() != LevelSoft {
		t.Fatalf("after scale-down: limit %v level %v", g.Limit(), g.Level())
	}

	setMax("max\n") // limit removed: physical memory (16 GiB)
	clk.advance(time.Second)
	step(g)
	if l := g.Limit(); l.Bytes != 16*gib || l.Source != SourcePhysical || g.Level() != LevelNormal {
		t.Fatalf("after removal: limit %v level %v", l, g.Level())
	}

	setMax("garbage\n") // garbage: ignored, physical memory still
	clk.advance(time.Second)
	step(g)
	if l := g.Limit(); l.Source != SourcePhysical {
		t.Fatalf("after garbage: limit %v", l)
	}
	got := tl.snapshot()
	if len(got) != 2 || got[0] != (transition{LevelNormal, LevelSoft}) || got[1] != (transition{LevelSoft, LevelNormal}) {
		t.Fatalf("transitions %v", got)
	}
}

func TestRefreshKeepsLimitOnFailure(t *testing.T) {
	clk := newFakeClock()
	det := fixture("v2-nested")
	h := &recordingHandler{}
	g := mustNew(t, Options{Logger: slog.New(h), detect: func() (Limit, error) { return det.detect() }, now: clk.now, manual: true})
	det.sysinfo = func() (int64, error) { return 0, errors.New("gone") }
	det.fsys = os.DirFS(filepath.Join("testdata", "missing"))
	clk.advance(time.Hour)
	g.watchOnce()
	if l := g.Limit(); l.Bytes != gib || l.Source != SourceCgroup2 {
		t.Fatalf("limit %v", l)
	}
	if h.count(slog.LevelWarn, "re-detection failed") != 0 {
		t.Fatal("the watcher logged: only the announcer may")
	}
	g.announceOnce()
	if h.count(slog.LevelWarn, "re-detection failed") != 1 {
		t.Fatal("no warning about the failed re-detection")
	}
}

func TestConfiguredLimitNotReread(t *testing.T) {
	clk := newFakeClock()
	detect := func() (Limit, error) {
		t.Error("a configured limit was re-detected")
		return Limit{}, ErrNoLimit
	}
	g := mustNew(t, Options{Limit: 5000, detect: detect, now: clk.now, manual: true})
	clk.advance(time.Hour)
	g.Refresh()
	step(g)
	if l := g.Limit(); l.Bytes != 5000 || l.Source != SourceConfig || len(l.Findings) != 0 {
		t.Fatalf("limit %v", l)
	}
}

// TestMeasureProcessWithLimit: with a live allocation as large as an
// explicit limit, the process's memory alone puts the governor at Hard; the
// queue's own bytes are not counted twice.
func TestMeasureProcessWithLimit(t *testing.T) {
	const size = 16 << 20
	ballast := make([]byte, size)
	for i := range ballast {
		ballast[i] = byte(i)
	}
	g := mustNew(t, Options{Limit: size, Measure: MeasureProcessMemory})
	s := g.Stats()
	if s.Measure != MeasureProcessMemory || s.ProcessBytes < size || s.Level != LevelHard || s.Used < size {
		t.Fatalf("stats %+v", s)
	}
	runtime.KeepAlive(ballast)

	// Queue bytes after the sample add to the usage exactly once. Manual:
	// no goroutine re-samples between the two reads.
	g2 := mustNew(t, Options{Limit: 1 << 40, Measure: MeasureProcessMemory, manual: true})
	before := g2.Stats()
	g2.Add(1000)
	if after := g2.Stats(); after.Used != before.Used+1000 {
		t.Fatalf("used %d -> %d after Add(1000)", before.Used, after.Used)
	}
	g2.Refresh() // the sample now includes the held bytes as part of the process
	if s := g2.Stats(); s.Used < s.BytesHeld || s.Used < s.ProcessBytes {
		t.Fatalf("stats %+v", s)
	}

	g3 := mustNew(t, Options{Limit: 1 << 40})
	if s := g3.Stats(); s.ProcessBytes != 0 || s.Used != 0 || s.Measure != MeasureQueueBytes {
		t.Fatalf("explicit Limit, no Measure: %+v", s)
	}
}

// TestWatcherRereadsLimit: the governor's own goroutine re-detects the
// limit every RefreshInterval, with nobody calling Refresh.
func TestWatcherRereadsLimit(t *testing.T) {
	root, setMax := writeTree(t, "1073741824\n")
	g := mustNew(t, Options{Root: root, RefreshInterval: time.Millisecond, SampleInterval: time.Millisecond})
	setMax("536870912\n")
	eventually(t, "the new limit", func() bool { return g.Limit().Bytes == 512*mib })
}

func TestOptionsInvalid(t *testing.T) {
	for _, o := range []Options{
		{Limit: -1},
		{Limit: 1, Soft: 0.9, Hard: 0.8},
		{Limit: 1, Soft: 0.5, Hard: 1.5},
		{Limit: 1, Soft: -0.1},
		{Limit: 1, Soft: math.NaN()},
		{Limit: 1, Hysteresis: 0.8},
		{Limit: 1, MinDelay: time.Second, MaxDelay: time.Millisecond},
		{Limit: 1, RefreshInterval: -1},
		{Limit: 1, SampleInterval: -1},
		{Limit: 1, Measure: MeasureQueueBytes + 1},
		{Limit: 1, Measure: -1},
	} {
		if _, err := New(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("New(%+v) = %v, want ErrInvalidOptions", o, err)
		}
	}
}

func TestNewNoLimit(t *testing.T) {
	det := fixture("missing")
	det.sysinfo = func() (int64, error) { return 0, errors.New("none") }
	_, err := New(Options{detect: det.detect})
	if !errors.Is(err, ErrNoLimit) {
		t.Fatalf("got %v, want ErrNoLimit", err)
	}
}

func TestNewHost(t *testing.T) {
	g := mustNew(t, Options{})
	if l := g.Limit(); l.Bytes <= 0 {
		t.Fatalf("limit %v", l)
	}
	g.Refresh()
	if g.Level() != LevelNormal {
		t.Fatalf("level %v", g.Level())
	}
}

func TestLevelString(t *testing.T) {
	for l, want := range map[Level]string{LevelNormal: "normal", LevelSoft: "soft", LevelHard: "hard", 7: "Level(7)"} {
		if l.String() != want {
			t.Errorf("%d: %q", l, l.String())
		}
	}
}

func BenchmarkAdd(b *testing.B) {
	g := mustNew(b, Options{Limit: 1 << 40})
	for b.Loop() {
		g.Add(64)
		g.Add(-64)
	}
}

func BenchmarkAddParallel(b *testing.B) {
	g := mustNew(b, Options{Limit: 1 << 40})
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.Add(64)
		}
	})
}

func BenchmarkLevel(b *testing.B) {
	g := mustNew(b, Options{Limit: 1 << 40})
	for b.Loop() {
		_ = g.Level()
	}
}

func BenchmarkDelaySoft(b *testing.B) {
	g := mustNew(b, Options{Limit: 1000})
	g.Add(850)
	for b.Loop() {
		_ = g.Delay()
	}
}

func BenchmarkRefresh(b *testing.B) {
	for _, m := range []Measure{MeasureQueueBytes, MeasureProcessMemory} {
		b.Run(m.String(), func(b *testing.B) {
			g := mustNew(b, Options{Limit: 1 << 40, Measure: m})
			for b.Loop() {
				g.Refresh()
			}
		})
	}
}

func BenchmarkDetectLimitHost(b *testing.B) {
	for b.Loop() {
		if _, err := DetectLimit(""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProcessSample is the cost of one MeasureProcessMemory sample
// (runtime/metrics.Read of two metrics), paid by the governor's goroutine
// every SampleInterval and by Refresh.
func BenchmarkProcessSample(b *testing.B) {
	p := newProcessSampler()
	for b.Loop() {
		if p.read() < 0 {
			b.Fatal("metrics missing")
		}
	}
}
