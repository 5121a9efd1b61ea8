package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pinDepth is the calling M's m.locks (what procPin increments) as seen from
// inside one more pin, minus that pin: 0 when the caller is not pinned. ok is
// false in builds without the assembly pin, whose token is nil and which
// cannot read it. norace: m.locks is the runtime's, written uninstrumented.
//
//go:norace
func pinDepth() (depth int32, ok bool) {
	if !pinAssembly {
		return 0, false
	}
	_, tok := procPin()
	depth = *tok - 1
	procUnpin(tok)
	return depth, true
}

// pinGuard records callbacks that ran while their goroutine was pinned.
type pinGuard struct {
	calls, pinned atomic.Int64
}

func (g *pinGuard) check() {
	g.calls.Add(1)
	if d, ok := pinDepth(); ok && d > 0 {
		g.pinned.Add(1)
	}
}

// slowHandler is a slog handler that takes a lock and sleeps briefly in
// Handle, like a handler writing to a contended, slow sink.
type slowHandler struct {
	mu    *sync.Mutex
	guard *pinGuard
}

func (h slowHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h slowHandler) Handle(context.Context, slog.Record) error {
	h.guard.check()
	h.mu.Lock()
	time.Sleep(20 * time.Microsecond) // the handler's own work, not a wait for an event
	h.mu.Unlock()
	return nil
}
func (h slowHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h slowHandler) WithGroup(string) slog.Handler      { return h }

// TestPinnedNeverBlocks is issue 10's first repro: uint64 items, RingSize
// 256, a memory limit of a few rings (5 to 12 KiB), an OnLevelChange that
// takes a mutex and sleeps, a slog handler that does the same, 32 producers.
// A level change reported while a producer is pinned to its P parks a
// goroutine holding "locks", and the runtime kills the process ("fatal
// error: schedule: holding locks"); so the repro runs in a child process,
// and the parent checks that the child lived. In builds with the assembly
// pin the child also checks, in the hook and the handler, that the goroutine
// calling them is not pinned: that catches a pinned call that happened not
// to park.
func TestPinnedNeverBlocks(t *testing.T) {
	if os.Getenv("VINEQUEUE_PINNED_CHILD") == "1" {
		pinnedChild(t)
		return
	}
	args := []string{"-test.run=^TestPinnedNeverBlocks$", "-test.v"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "VINEQUEUE_PINNED_CHILD=1")
	out, err := cmd.CombinedOutput()
	skipIfNoReexec(t, err)
	if err != nil {
		head := string(out)
		if i := strings.Index(head, "goroutine "); i > 0 {
			head = head[:i] // the crash's cause, not every stack
		}
		t.Fatalf("child died: %v\n%s", err, head)
	}
	if !strings.Contains(string(out), "PINNED-CHILD-OK") {
		t.Fatalf("child printed no result:\n%s", out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "PINNED-CHILD") {
			t.Log(strings.TrimSpace(line))
		}
	}
}

func pinnedChild(t *testing.T) {
	perProducer := 5_000
	if testing.Short() {
		perProducer = 1_500
	}
	var hookMu, logMu sync.Mutex
	var guard pinGuard
	ran := map[Policy]bool{}
	for limit := int64(5 << 10); limit <= 12<<10; limit += 1 << 10 {
		for _, policy := range []Policy{Reject, Block} {
			var delivered atomic.Int64
			q, err := New(Config[uint64]{
				Send: func(_ context.Context, b []uint64) error {
					delivered.Add(int64(len(b)))
					return nil
				},
				RingSize: 256, BatchSize: 64, Workers: 2,
				Logger: slog.New(slowHandler{mu: &logMu, guard: &guard}),
				Memory: MemoryConfig{Limit: limit, Policy: policy, OnLevelChange: func(_, _ Level) {
					guard.check()
					hookMu.Lock()
					time.Sleep(50 * time.Microsecond) // the hook's own work
					hookMu.Unlock()
				}},
			})
			if errors.Is(err, ErrInvalidConfig) && strings.Contains(err.Error(), "Memory.Limit") {
				// The Ps' rings alone would keep this limit at Hard (or,
				// under Block, above the level it waits for).
				fmt.Printf("PINNED-CHILD limit=%d policy=%v refused by New: %v\n", limit, policy, err)
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			ran[policy] = true
			var accepted, refused atomic.Int64
			var wg sync.WaitGroup
			for p := range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perProducer {
						switch err := q.Enqueue(uint64(p*perProducer + i)); {
						case err == nil:
							accepted.Add(1)
						case errors.Is(err, ErrFull), errors.Is(err, ErrClosed):
							refused.Add(1)
						default:
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			if delivered.Load() != accepted.Load() {
				t.Errorf("limit %d %v: delivered %d, accepted %d", limit, policy, delivered.Load(), accepted.Load())
			}
			fmt.Printf("PINNED-CHILD limit=%d policy=%v accepted=%d refused=%d level-changes-so-far=%d rejected=%d blocked=%d\n",
				limit, policy, accepted.Load(), refused.Load(), guard.calls.Load(), st.Rejected, st.Blocked)
		}
	}
	if !ran[Reject] || !ran[Block] {
		t.Errorf("New refused every limit for a policy: ran %v", ran)
	}
	if guard.calls.Load() == 0 {
		t.Error("no level change and no log line: the repro did not reach the governor")
	}
	if n := guard.pinned.Load(); n > 0 {
		t.Errorf("%d of %d hook or handler calls ran pinned to a P", n, guard.calls.Load())
	}
	if !t.Failed() {
		fmt.Println("PINNED-CHILD-OK pin-check:", pinAssembly)
	}
}
