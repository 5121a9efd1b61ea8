package governor

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// fakeApp is an "application" whose memory the fake sampler reports.
type fakeApp struct {
	bytes   atomic.Int64
	samples atomic.Int64
}

func (a *fakeApp) sample() int64 {
	a.samples.Add(1)
	return a.bytes.Load()
}

func detected(bytes int64) func() (Limit, error) {
	return func() (Limit, error) {
		return Limit{Bytes: bytes, Source: SourceCgroup2, Path: "/sys/fs/cgroup/memory.max"}, nil
	}
}

// TestDefaultWeighsProcess: with no Limit the governor weighs the whole
// process against the detected limit. An application growing its own
// memory toward the limit, with the queue holding nothing, takes the level
// to Soft and then Hard before the limit is reached.
func TestDefaultWeighsProcess(t *testing.T) {
	const limit = 1 << 30
	var app fakeApp
	var tl transitionLog
	g := mustNew(t, Options{detect: detected(limit), sample: app.sample, OnLevelChange: tl.hook, manual: true})
	if s := g.Stats(); s.Measure != MeasureProcessMemory || s.Limit != limit {
		t.Fatalf("stats %+v", s)
	}
	var softAt, hardAt int64
	for app.bytes.Load() < limit {
		app.bytes.Add(limit / 100)
		g.Refresh() // what the queue's collector calls on its tick
		switch l := g.Level(); {
		case l == LevelSoft && softAt == 0:
			softAt = app.bytes.Load()
		case l == LevelHard && hardAt == 0:
			hardAt = app.bytes.Load()
		}
	}
	if softAt == 0 || hardAt == 0 || softAt >= hardAt || hardAt >= limit {
		t.Fatalf("Soft at %d, Hard at %d, limit %d", softAt, hardAt, limit)
	}
	if s := g.Stats(); s.BytesHeld != 0 || s.ProcessBytes < limit {
		t.Fatalf("stats %+v", s)
	}
	step(g)
	checkChain(t, tl.snapshot(), LevelHard)

	// The application frees its memory: the level falls on the next sample.
	app.bytes.Store(limit / 10)
	step(g)
	if g.Level() != LevelNormal {
		t.Fatalf("level %v after the application freed its memory", g.Level())
	}
}

// TestDefaultWatcherSamples: the governor's own goroutine samples, so the
// level follows the process without anyone calling Refresh.
func TestDefaultWatcherSamples(t *testing.T) {
	var app fakeApp
	g := mustNew(t, Options{detect: detected(1000), sample: app.sample, SampleInterval: 1})
	app.bytes.Store(960)
	eventually(t, "Hard from the watcher's sample", func() bool { return g.Level() == LevelHard })
	app.bytes.Store(0)
	eventually(t, "Normal from the watcher's sample", func() bool { return g.Level() == LevelNormal })
}

// TestAddMovesProcessBetweenSamples: used = sample + (held now - held at the
// sample): an Add counts at once, and bytes already in the sample are not
// counted twice.
func TestAddMovesProcessBetweenSamples(t *testing.T) {
	var app fakeApp
	app.bytes.Store(500)
	g := mustNew(t, Options{detect: detected(1000), sample: app.sample, manual: true})
	if s := g.Stats(); s.Used != 500 || s.Level != LevelNormal {
		t.Fatalf("stats %+v", s)
	}
	if l := g.Add(300); l != LevelSoft {
		t.Fatalf("Add(300) on a 500-byte process: %v, want soft", l)
	}
	app.bytes.Store(800) // the sample now contains the 300 held
	g.Refresh()
	if s := g.Stats(); s.Used != 800 || s.Level != LevelSoft {
		t.Fatalf("after resample: %+v", s)
	}
	g.Sub(300) // delivered: 500 left
	if s := g.Stats(); s.Used != 500 || s.Level != LevelNormal {
		t.Fatalf("after Sub: %+v", s)
	}
}

// TestExplicitLimitIgnoresProcess: an explicit Limit is the queue's own
// budget: the process's memory is neither sampled nor counted, unless
// MeasureProcessMemory is asked for.
func TestExplicitLimitIgnoresProcess(t *testing.T) {
	var app fakeApp
	app.bytes.Store(1 << 40)
	g := mustNew(t, Options{Limit: 1000, sample: app.sample, manual: true})
	g.Refresh()
	step(g)
	if s := g.Stats(); s.Measure != MeasureQueueBytes || s.Used != 0 || s.ProcessBytes != 0 || s.Level != LevelNormal {
		t.Fatalf("stats %+v", s)
	}
	if n := app.samples.Load(); n != 0 {
		t.Fatalf("sampled %d times", n)
	}
	if g.Add(800) != LevelSoft {
		t.Fatalf("queue bytes not counted: %+v", g.Stats())
	}

	g2 := mustNew(t, Options{Limit: 1000, Measure: MeasureProcessMemory, sample: app.sample, manual: true})
	if s := g2.Stats(); s.Level != LevelHard || s.ProcessBytes != 1<<40 {
		t.Fatalf("explicit Limit with MeasureProcessMemory: %+v", s)
	}

	// And the opposite: a detected limit weighing the queue only.
	g3 := mustNew(t, Options{Measure: MeasureQueueBytes, detect: detected(1000), sample: app.sample, manual: true})
	step(g3)
	if s := g3.Stats(); s.Used != 0 || s.Level != LevelNormal || s.Limit != 1000 {
		t.Fatalf("detected limit with MeasureQueueBytes: %+v", s)
	}
}

// TestProcessMemoryRealHeap: the real sampler. An application allocating
// (and keeping) 1 MiB chunks, against a limit 64 MiB above what the process
// uses now, drives the level to Soft and then Hard before its memory
// reaches the limit, with the queue holding nothing.
func TestProcessMemoryRealHeap(t *testing.T) {
	runtime.GC()
	base := newProcessSampler().read()
	if base < 0 {
		t.Skip("runtime/metrics lacks the process-memory metrics")
	}
	limit := base + 64<<20
	g := mustNew(t, Options{detect: detected(limit), manual: true})
	var app [][]byte
	var softAt, hardAt int64
	for len(app) < 256 && hardAt == 0 {
		chunk := make([]byte, 1<<20)
		for i := range chunk {
			chunk[i] = byte(i) // touch it
		}
		app = append(app, chunk)
		g.Refresh()
		s := g.Stats()
		switch {
		case s.Level >= LevelSoft && softAt == 0:
			softAt = s.ProcessBytes
		}
		if s.Level == LevelHard {
			hardAt = s.ProcessBytes
		}
	}
	runtime.KeepAlive(app)
	t.Logf("base %d MiB, limit %d MiB, Soft at %d MiB, Hard at %d MiB, application %d MiB",
		base>>20, limit>>20, softAt>>20, hardAt>>20, len(app))
	if softAt == 0 || hardAt == 0 || hardAt >= limit {
		t.Fatalf("Soft at %d, Hard at %d, limit %d", softAt, hardAt, limit)
	}
	if held := g.Stats().BytesHeld; held != 0 {
		t.Fatalf("held %d", held)
	}
}
