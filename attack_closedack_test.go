package vinequeue_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"
)

// TestAttackHealthClosedAckCalls: Health's Closed promise for the calls
// the landed test does not make: EnqueueAck at both levels, with a WAL
// (Periodic, Sync) and without, Collectors 2, Stop in time or out of time
// with a Send that blocks. A watcher polls Health; once it sees Closed it
// tells the producers through a channel, and every call a producer starts
// after hearing it must be refused with ErrClosed (Enqueue and EnqueueKey
// too, while GOMAXPROCS moves). Every EnqueueAck that returned nil at
// AckDelivered was delivered.
func TestAttackHealthClosedAckCalls(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rounds := 10
	if testing.Short() {
		rounds = 3
	}
	for _, mode := range []string{"memory", "periodic", "sync"} {
		for _, outOfTime := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/outOfTime=%v", mode, outOfTime), func(t *testing.T) {
				for round := range rounds {
					closedAckRound(t, mode, outOfTime, round)
					if t.Failed() {
						return
					}
				}
			})
		}
	}
}

func closedAckRound(t *testing.T, mode string, outOfTime bool, round int) {
	var mu sync.Mutex
	delivered := map[string]bool{}
	unblock := make(chan struct{})
	cfg := vq.Config[[]byte]{
		Send: func(ctx context.Context, b [][]byte) error {
			if outOfTime {
				select { // held until Stop gives up
				case <-ctx.Done():
					return ctx.Err()
				case <-unblock:
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, it := range b {
				delivered[string(it)] = true
			}
			return nil
		},
		BatchSize:     16,
		FlushInterval: 2 * time.Millisecond,
		Workers:       2,
		Collectors:    2,
	}
	if mode != "memory" {
		var m vq.WALMode
		if err := m.UnmarshalText([]byte(mode)); err != nil {
			t.Fatal(err)
		}
		cfg.WAL = vq.WALConfig{Dir: t.TempDir(), Mode: m, SegmentSize: 1 << 20, SyncInterval: 5 * time.Millisecond}
	}
	q, err := vq.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	var late, ackedNotDelivered atomic.Int64
	var wg sync.WaitGroup
	started := make(chan struct{}, 4)
	var ackedMu sync.Mutex
	var acked []string
	// Plain producers on the fast path and keyed ones, while GOMAXPROCS
	// moves: a call started after Closed is refused whatever P it runs on.
	stopProcs := make(chan struct{})
	procsDone := make(chan struct{})
	go func() {
		defer close(procsDone)
		prev := runtime.GOMAXPROCS(0)
		defer runtime.GOMAXPROCS(prev)
		for i := 0; ; i++ {
			select {
			case <-stopProcs:
				return
			default:
			}
			runtime.GOMAXPROCS(1 + i%4)
			runtime.Gosched()
		}
	}()
	for p := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				var heard bool
				select {
				case <-closed:
					heard = true
				default:
				}
				it := []byte(fmt.Sprintf("p%d/%d", p, i))
				var err error
				if p == 0 {
					err = q.Enqueue(it)
				} else {
					err = q.EnqueueKey(uint64(i%3), it)
				}
				if err == nil {
					if heard {
						late.Add(1)
					}
					continue
				}
				if !errors.Is(err, vq.ErrClosed) {
					t.Errorf("intake: %v", err)
					return
				}
				if heard {
					return
				}
			}
		})
	}
	for p := range 4 {
		wg.Go(func() {
			started <- struct{}{}
			for i := 0; ; i++ {
				var heard bool
				select {
				case <-closed:
					heard = true
				default:
				}
				it := fmt.Sprintf("%d/%d/%d", round, p, i)
				level := vq.AckDurable
				if p%2 == 1 {
					level = vq.AckDelivered
				}
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				err := q.EnqueueAck(ctx, []byte(it), level)
				cancel()
				if err == nil {
					if heard {
						late.Add(1)
					}
					if level == vq.AckDelivered {
						ackedMu.Lock()
						acked = append(acked, it)
						ackedMu.Unlock()
					}
					continue
				}
				if heard && !errors.Is(err, vq.ErrClosed) {
					t.Errorf("EnqueueAck(%v) started after Health said Closed: %v; want ErrClosed", level, err)
				}
				if errors.Is(err, vq.ErrClosed) && heard {
					return
				}
				if errors.Is(err, vq.ErrClosed) || errors.Is(err, vq.ErrDropped) || errors.Is(err, context.DeadlineExceeded) {
					continue // the ack's wait ended (Stop, its ctx): the next call will hear Closed
				}
				t.Errorf("EnqueueAck(%v): %v", level, err)
				return
			}
		})
	}
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		for !q.Health().Closed {
			time.Sleep(50 * time.Microsecond) // polling Health, as a caller would
		}
		close(closed)
	}()
	for range 4 {
		<-started
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if outOfTime {
		cancel()
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Millisecond)
	}
	err = q.Stop(ctx)
	cancel()
	if !outOfTime && err != nil {
		t.Errorf("Stop: %v", err)
	}
	<-watcherDone
	wg.Wait()
	close(stopProcs)
	<-procsDone
	close(unblock)
	if n := late.Load(); n > 0 {
		t.Errorf("%d EnqueueAck calls accepted after Health said Closed", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, it := range acked {
		if !delivered[it] {
			ackedNotDelivered.Add(1)
		}
	}
	if n := ackedNotDelivered.Load(); n > 0 {
		t.Errorf("%d AckDelivered calls returned nil for items never delivered", n)
	}
}
