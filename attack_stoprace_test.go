package vinequeue

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackStopRacesEverything: ParkKeys, three collectors, and at once
// EnqueueKey (with poison items that park their keys), Enqueue,
// EnqueueAck at both levels with callers giving up the wait, and an
// operator loop of DeadLetters, RequeueDeadLetters, PurgeDeadLetters
// (on parked ones only: a purge loses items by design), Flush with short
// deadlines and GOMAXPROCS changes, while Stop runs with a deadline too
// short to deliver everything. Every call returns; the identity holds;
// and after a second queue on the directory requeues every dead letter
// into a healthy sink, every accepted item was delivered or handed to
// OnDrop: nothing vanished.
func TestAttackStopRacesEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, mode := range []WALMode{Sync, Periodic, Overflow} {
		t.Run(mode.String(), func(t *testing.T) {
			for round := range 3 {
				stopRacesEverything(t, mode, time.Duration(5+round*20)*time.Millisecond)
			}
		})
	}
}

func stopRacesEverything(t *testing.T, mode WALMode, stopAfter time.Duration) {
	dir := t.TempDir()
	var mu sync.Mutex
	delivered, onDrop := map[uint64]bool{}, map[uint64]bool{}
	record := func(m map[uint64]bool, b [][]byte) {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range b {
			m[binary.LittleEndian.Uint64(v)] = true
		}
	}
	const poisonBit = 1 << 62
	healthy := atomic.Bool{}
	send := func(ctx context.Context, b [][]byte) error {
		if !healthy.Load() {
			for _, v := range b {
				if binary.LittleEndian.Uint64(v)&poisonBit != 0 {
					return Permanent(errors.New("poison"))
				}
			}
			if rand.IntN(4) == 0 {
				select {
				case <-time.After(time.Duration(rand.IntN(2000)) * time.Microsecond):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		record(delivered, b)
		return nil
	}
	cfg := Config[[]byte]{
		Send: send, BatchSize: 8, FlushInterval: 2 * time.Millisecond, Workers: 4, Collectors: 3,
		Retry:    RetryPolicy{MaxAttempts: 1},
		OnDrop:   func(b [][]byte, _ error) { record(onDrop, b) },
		WAL:      WALConfig{Dir: dir, Mode: mode, SegmentSize: 1 << 20, SyncInterval: 2 * time.Millisecond},
		ParkKeys: true,
	}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var next atomic.Uint64
	item := func(poison bool) ([]byte, uint64) {
		id := next.Add(1)
		if poison {
			id |= poisonBit
		}
		return binary.LittleEndian.AppendUint64(make([]byte, 0, 16), id), id
	}
	var amu sync.Mutex
	accepted := map[uint64]bool{}
	accept := func(id uint64) {
		amu.Lock()
		accepted[id] = true
		amu.Unlock()
	}
	var wg sync.WaitGroup
	stopped := make(chan struct{})
	running := func() bool {
		select {
		case <-stopped:
			return false
		default:
			return true
		}
	}
	for p := range 3 { // keyed, every 50th item of a key poison
		wg.Go(func() {
			for i := 0; running() || i < 10; i++ {
				k := uint64(p*8 + i%8)
				v, id := item(i%50 == 8 && k%2 == 0)
				if q.EnqueueKey(k, v) == nil {
					accept(id)
				} else if !running() {
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; running() && i < 5000; i++ { // bounded: the replay stays short
			v, id := item(false)
			if q.Enqueue(v) == nil {
				accept(id)
			}
		}
	})
	for a := range 4 {
		wg.Go(func() {
			level := AckDelivered
			if a%2 == 0 {
				level = AckDurable
			}
			for running() {
				v, id := item(false)
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				err := q.EnqueueAck(ctx, v, level)
				cancel()
				if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrDropped) ||
					(errors.Is(err, ErrClosed) && containsKept(err)) {
					accept(id)
				}
			}
		})
	}
	wg.Go(func() { // the operator
		for i := 0; running(); i++ {
			runtime.GOMAXPROCS(1 + i%4)
			ds, err := q.DeadLetters()
			if err != nil {
				continue
			}
			for _, d := range ds {
				switch {
				case !d.Parked && rand.IntN(2) == 0:
					_, _ = q.RequeueDeadLetters(d.ID)
				case d.Parked && rand.IntN(4) == 0:
					// A parked letter's items are not failed: purging
					// them would lose items on purpose. Requeue it.
					_, _ = q.RequeueDeadLetters(d.ID)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Millisecond)
			_ = q.Flush(ctx)
			cancel()
		}
	})
	time.Sleep(stopAfter) // the moment Stop comes: any
	stopErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		stopErr <- q.Stop(ctx)
	}()
	var serr error
	select {
	case serr = <-stopErr:
	case <-time.After(20 * time.Second):
		t.Fatal("Stop hangs")
	}
	close(stopped)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("a call hangs after Stop")
	}
	// OnDrop may still be handed batches a moment after a Stop out of
	// time (TestAttackStopOutOfTimeCountsEverything): wait for Buffered 0.
	waitFor(t, "Buffered 0 after Stop", func() bool { return q.Stats().Buffered == 0 })
	st := q.Stats()
	checkIdentity(t, st)
	// A second queue, healthy sink: the replay, then every dead letter.
	healthy.Store(true)
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replay", func() bool { s := r.Stats(); return !s.Backlog.Replaying && s.Buffered == 0 })
	for range 5 {
		if _, err := r.RequeueDeadLetters(); err != nil {
			t.Fatal(err)
		}
		flushT(t, r)
		if ds, _ := r.DeadLetters(); len(ds) == 0 {
			break
		}
	}
	if ds, _ := r.DeadLetters(); len(ds) != 0 {
		t.Fatalf("%d dead letters left after requeueing all into a healthy sink: %+v", len(ds), ds)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	amu.Lock()
	defer amu.Unlock()
	lost := 0
	for id := range accepted {
		if !delivered[id] && !onDrop[id] {
			if lost < 5 {
				t.Errorf("item %#x accepted, never delivered nor handed to OnDrop", id)
			}
			lost++
		}
	}
	t.Logf("%v stop after %v: Stop %v; accepted %d, LeftOnDisk %d, Parked %d, DeadLettered %d, Dropped %d; second queue replayed %d; lost %d",
		mode, stopAfter, serr, len(accepted), st.LeftOnDisk, st.Parked, st.DeadLettered, st.Dropped, r.Stats().Replayed, lost)
}

func containsKept(err error) bool { return strings.Contains(err.Error(), "kept in the WAL") }
