package vinequeue_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	vq "github.com/vineroute/vinequeue"

	"github.com/vineroute/vinequeue/internal/crashtest"
)

const procsChildEnv = "VINEQUEUE_ATTACK_PROCS_CHILD"

func procsConfig(dir string, send vq.SendFunc[[]byte]) vq.Config[[]byte] {
	return vq.Config[[]byte]{
		Send:          send,
		BatchSize:     64,
		Workers:       2,
		Collectors:    2,
		FlushInterval: 5 * time.Millisecond,
		Retry:         vq.RetryPolicy{MaxAttempts: vq.RetryForever, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond},
		WAL:           vq.WALConfig{Dir: dir, Mode: vq.Periodic, SyncInterval: 10 * time.Millisecond},
	}
}

const (
	procsProducers = 8
	procsPerPhase  = 300
	procsPhases    = 4
)

// procsChild: Send never succeeds (held, or failing and retried), so that
// every accepted item is at risk; producers on many goroutines enqueue
// while GOMAXPROCS goes 4, 1, 3, 2 between phases (the rings of Ps that
// went away still hold items). Once DurableThrough passes the last call,
// it says READY and waits for its SIGKILL.
func procsChild(dir string) {
	q, err := vq.New(procsConfig(dir, func(ctx context.Context, b [][]byte) error {
		if len(b[0])%2 == 0 {
			<-ctx.Done()
			return ctx.Err()
		}
		return errors.New("down")
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "New:", err)
		os.Exit(2)
	}
	for phase, procs := range []int{4, 1, 3, 2}[:procsPhases] {
		runtime.GOMAXPROCS(procs)
		var wg sync.WaitGroup
		for p := range procsProducers {
			wg.Go(func() {
				for i := range procsPerPhase {
					it := fmt.Appendf(nil, "%d/%d/%d", phase, p, i)
					var err error
					if p%2 == 0 {
						err = q.EnqueueKey(uint64(p*7+i%5), it)
					} else {
						err = q.Enqueue(it)
					}
					if err != nil {
						fmt.Fprintln(os.Stderr, "enqueue:", err)
						os.Exit(2)
					}
					if i%16 == 0 {
						runtime.Gosched()
					}
				}
			})
		}
		wg.Wait()
	}
	last := time.Now()
	for !q.Stats().DurableThrough.After(last) {
		time.Sleep(time.Millisecond) // polling; the parent's deadline bounds it
	}
	fmt.Println("READY")
	select {}
}

// TestAttackPeriodicProcsChangeCrash: items accepted on Ps that a later
// GOMAXPROCS took away, never delivered (Send holds or fails every
// batch), are on disk once DurableThrough passes them: after a SIGKILL
// the next New replays every accepted item exactly once, each key's in
// its order.
func TestAttackPeriodicProcsChangeCrash(t *testing.T) {
	if dir := os.Getenv(procsChildEnv); dir != "" {
		procsChild(dir)
		return
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	dir := t.TempDir()
	crashtest.KillWhenReady(t, "TestAttackPeriodicProcsChangeCrash", "READY", procsChildEnv+"="+dir)

	var mu sync.Mutex
	seen := map[string]int{}
	lastOf := map[string]int{}
	disorder := 0
	q, err := vq.New(procsConfig(dir, func(_ context.Context, b [][]byte) error {
		mu.Lock()
		defer mu.Unlock()
		for _, it := range b {
			seen[string(it)]++
			var phase, p, i int
			fmt.Sscanf(strings.ReplaceAll(string(it), "/", " "), "%d %d %d", &phase, &p, &i)
			if p%2 == 0 && seen[string(it)] == 1 {
				// key p*7+i%5: order within it is (phase, i)
				k := fmt.Sprint(p*7 + i%5)
				pos := phase*procsPerPhase + i
				if l, ok := lastOf[k]; ok && pos < l {
					disorder++
				}
				lastOf[k] = pos
			}
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	flushThenClose(t, q, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	missing, twice := 0, 0
	for phase := range procsPhases {
		for p := range procsProducers {
			for i := range procsPerPhase {
				switch n := seen[fmt.Sprintf("%d/%d/%d", phase, p, i)]; {
				case n == 0:
					if missing < 5 {
						t.Errorf("item %d/%d/%d accepted before DurableThrough, never replayed", phase, p, i)
					}
					missing++
				case n > 1:
					twice++
				}
			}
		}
	}
	if missing+twice+disorder > 0 {
		t.Errorf("%d items lost, %d replayed more than once, %d keyed items out of order (of %d accepted)", missing, twice, disorder, procsPhases*procsProducers*procsPerPhase)
	}
}
