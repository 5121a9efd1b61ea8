package governor

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// blockingHook blocks in OnLevelChange until released, recording calls.
type blockingHook struct {
	transitionLog
	entered chan struct{} // receives once per call, when the call starts
	release chan struct{} // closed by the test
}

func newBlockingHook() *blockingHook {
	return &blockingHook{entered: make(chan struct{}, 1024), release: make(chan struct{})}
}

func (h *blockingHook) hook(from, to Level) {
	h.entered <- struct{}{}
	<-h.release
	h.transitionLog.hook(from, to)
}

// blockingHandler is a slog handler that blocks every record until released.
type blockingHandler struct {
	recordingHandler
	entered chan struct{}
	release chan struct{}
}

func (h *blockingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.entered <- struct{}{}
	<-h.release
	return h.recordingHandler.Handle(ctx, r)
}
func (h *blockingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *blockingHandler) WithGroup(string) slog.Handler      { return h }

// within runs f in a goroutine and fails the test unless it returns within
// 10 s: what would hang the old synchronous design.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return while the announcer was blocked", what)
	}
}

// flap moves the governor (limit 1000) through Hard, Soft and Normal and
// back, returning the transitions it made.
func flap(g *Governor) []transition {
	g.Add(1000) // Normal -> Hard
	g.Add(-150) // 850: Soft
	g.Add(-200) // 650: Normal
	g.Add(-650)
	return []transition{{LevelNormal, LevelHard}, {LevelHard, LevelSoft}, {LevelSoft, LevelNormal}}
}

// TestAddDoesNotWaitForHook: the shape of the "schedule: holding locks"
// crash without pinning. An OnLevelChange that blocks on a channel must not
// block Add, Sub, Level, Delay, Stats, Settle or Refresh (the first of them
// is what the queue calls while pinned; under the old design Add ran the
// hook itself and this test hangs), nor the wake-up of WaitBelowSoft; once
// released, every change is announced, in order.
func TestAddDoesNotWaitForHook(t *testing.T) {
	h := newBlockingHook()
	g := mustNew(t, Options{Limit: 1000, OnLevelChange: h.hook})
	var want []transition
	within(t, "Add of the first change", func() { want = append(want, flap(g)...) })
	g.Settle()
	<-h.entered // the announcer is now blocked in the hook

	within(t, "Add, Level, Delay, Stats, Settle, Refresh", func() {
		for range 10 {
			want = append(want, flap(g)...)
			_, _, _ = g.Level(), g.Delay(), g.Stats()
			g.Settle()
			g.Refresh()
		}
	})
	// A waiter is released by the watcher, which never runs the hook.
	g.Add(1000)
	errc := make(chan error, 1)
	go func() { errc <- g.WaitBelowSoft(context.Background()) }()
	g.Add(-1000)
	want = append(want, transition{LevelNormal, LevelHard}, transition{LevelHard, LevelNormal})
	g.Settle()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitBelowSoft was not woken while the hook was blocked")
	}
	if got := len(h.snapshot()); got != 0 {
		t.Fatalf("%d hook calls completed before release", got)
	}

	close(h.release)
	quiesce(t, g)
	got := h.snapshot()
	if len(got) != len(want) {
		t.Fatalf("%d transitions announced, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("transition %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestAddDoesNotWaitForSlogHandler: the same with a slog handler that
// blocks: warnings come from the governor's goroutine, never from Add.
func TestAddDoesNotWaitForSlogHandler(t *testing.T) {
	h := &blockingHandler{entered: make(chan struct{}, 1024), release: make(chan struct{})}
	var tl transitionLog
	g := mustNew(t, Options{Limit: 1000, Logger: slog.New(h), OnLevelChange: tl.hook})
	within(t, "Add", func() { g.Add(1000) })
	g.Settle()
	<-h.entered // blocked logging "memory pressure rising"
	within(t, "Add, Level, Delay, Refresh", func() {
		for range 10 {
			flap(g)
			_ = g.Delay()
			g.Refresh()
		}
		g.Add(-1000)
	})
	if g.Level() != LevelNormal {
		t.Fatalf("level %v", g.Level())
	}
	close(h.release)
	quiesce(t, g)
	if n := h.count(slog.LevelWarn, "memory pressure rising"); n < 1 {
		t.Fatalf("%d warnings", n)
	}
	checkChain(t, tl.snapshot(), LevelNormal)
}

// TestHookLappedMerges: far more changes than the ring holds pile up behind
// a blocked hook; after release the announcements still chain (from of each
// is the previous to), end at the final level, and were merged rather than
// grown without bound.
func TestHookLappedMerges(t *testing.T) {
	h := newBlockingHook()
	g := mustNew(t, Options{Limit: 1000, OnLevelChange: h.hook})
	g.Add(1000)
	g.Settle()
	<-h.entered
	const flaps = 10 * transitionRing
	for i := range flaps {
		if i%2 == 0 {
			g.Add(-1000)
		} else {
			g.Add(1000)
		}
	}
	// Ends at Hard (the last Add of the loop added).
	close(h.release)
	quiesce(t, g)
	got := h.snapshot()
	checkChain(t, got, LevelHard)
	if len(got) > 2*transitionRing+2 || len(got) < 2 {
		t.Fatalf("%d announcements for %d changes: not merged", len(got), flaps+1)
	}
	t.Logf("%d changes announced as %d", flaps+1, len(got))
}

// TestWaitBelowSoftNoLostWakeups: producers at Hard wait while senders
// finish batches with lock-free Subs (with and without Settle); once the
// senders are done and usage is back to zero, every waiter must return. A
// waiter parked on a channel nobody closes times out and fails the test.
func TestWaitBelowSoftNoLostWakeups(t *testing.T) {
	for _, settle := range []bool{true, false} {
		name := "Settle"
		if !settle {
			name = "Backstop"
		}
		t.Run(name, func(t *testing.T) {
			g := mustNew(t, Options{Limit: 10_000, SampleInterval: 5 * time.Millisecond})
			senders := 2 * runtime.GOMAXPROCS(0)
			const producers = 16
			iters := 300
			if testing.Short() {
				iters = 100
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			stop := make(chan struct{})
			var waits, woken atomic.Int64
			var pwg sync.WaitGroup
			for range producers {
				pwg.Add(1)
				go func() {
					defer pwg.Done()
					for {
						select {
						case <-stop:
							// A last wait at whatever level is left: must end.
							if err := g.WaitBelowSoft(ctx); err != nil {
								t.Errorf("final wait: %v (level %v)", err, g.Level())
							}
							return
						default:
						}
						if g.Level() == LevelNormal {
							runtime.Gosched()
							continue
						}
						waits.Add(1)
						if err := g.WaitBelowSoft(ctx); err != nil {
							t.Errorf("wait: %v (level %v, stats %+v)", err, g.Level(), g.Stats())
							return
						}
						woken.Add(1)
					}
				}()
			}
			churn(g, senders, iters, 1000, 3000, settle)
			close(stop)
			pwg.Wait()
			if s := g.Stats(); s.BytesHeld != 0 || s.Level != LevelNormal {
				t.Fatalf("after balanced adds: %+v", s)
			}
			t.Logf("%d waits, %d woken", waits.Load(), woken.Load())
		})
	}
}

// TestCloseStopsGoroutines: Close ends both goroutines (goleak in TestMain
// checks the package as a whole) and a hook in progress is waited for.
func TestCloseStopsGoroutines(t *testing.T) {
	h := newBlockingHook()
	g, err := New(Options{Limit: 1000, OnLevelChange: h.hook})
	if err != nil {
		t.Fatal(err)
	}
	g.Add(1000)
	g.Settle()
	<-h.entered
	closed := make(chan struct{})
	go func() { g.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a hook was running")
	case <-time.After(10 * time.Millisecond):
		// Not proof, only a chance to catch a Close that does not wait.
	}
	close(h.release)
	<-closed
	if g.Add(-1000) != LevelNormal || g.Close() != nil {
		t.Fatal("Add and Close must keep working after Close")
	}
	if err := g.WaitBelowSoft(context.Background()); err != nil {
		t.Fatalf("at Normal after Close: %v", err)
	}
	g.Add(1000)
	if err := g.WaitBelowSoft(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("at Hard after Close: %v", err)
	}
}

// TestCloseAnnouncesPending: changes made before Close are announced by the
// time Close returns, even if the governor's goroutines had not looked yet.
func TestCloseAnnouncesPending(t *testing.T) {
	var tl transitionLog
	g, err := New(Options{Limit: 1000, OnLevelChange: tl.hook, SampleInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	flap(g)
	g.Close()
	got := tl.snapshot()
	want := []transition{{LevelNormal, LevelHard}, {LevelHard, LevelSoft}, {LevelSoft, LevelNormal}}
	if len(got) != len(want) {
		t.Fatalf("announced %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("announced %v, want %v", got, want)
		}
	}
}
