package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vineroute/vinequeue"
)

// tally records which item values a run accepted (its call returned nil),
// which a Send delivered (returned nil for their batch) and which OnDrop
// was handed.
type tally struct {
	mu                           sync.Mutex
	accepted, delivered, dropped map[string]int
}

func newTally() *tally {
	return &tally{accepted: map[string]int{}, delivered: map[string]int{}, dropped: map[string]int{}}
}

func (y *tally) add(m map[string]int, rs []Record) {
	y.mu.Lock()
	defer y.mu.Unlock()
	for _, r := range rs {
		m[string(r.Value)]++
	}
}

// sendInto wraps send: the records of a batch it returned nil for count as
// delivered.
func (y *tally) sendInto(send vinequeue.SendFunc[Record]) vinequeue.SendFunc[Record] {
	return func(ctx context.Context, b []Record) error {
		err := send(ctx, b)
		if err == nil {
			y.add(y.delivered, b)
		}
		return err
	}
}

// produceMixed runs producers that call Enqueue, EnqueueKey and
// EnqueueBatch in turn until the queue refuses them (ErrClosed), each
// value unique, and counts what was accepted. It returns a wait for them.
func produceMixed(t *testing.T, q *vinequeue.Queue[Record], y *tally, producers int) func() {
	var wg sync.WaitGroup
	for g := range producers {
		wg.Go(func() {
			for i := 0; ; i++ {
				key := fmt.Appendf(nil, "key-%d-%d", g, i%7)
				rec := func(j int) Record {
					return Record{Key: key, Value: fmt.Appendf(nil, "%d:%d:%d", g, i, j)}
				}
				var err error
				var took []Record
				switch i % 3 {
				case 0:
					r := rec(0)
					if err = q.Enqueue(r); err == nil {
						took = []Record{r}
					}
				case 1:
					r := rec(0)
					if err = q.EnqueueKey(vinequeue.KeyOf(string(key)), r); err == nil {
						took = []Record{r}
					}
				default:
					rs := []Record{rec(0), rec(1), rec(2)}
					var n int
					n, err = q.EnqueueBatch(rs)
					took = rs[:n]
				}
				y.add(y.accepted, took)
				if errors.Is(err, vinequeue.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("producer %d: %v", g, err)
					return
				}
			}
		})
	}
	return wg.Wait
}

// TestAttackStopRacesProducersBrokerGone: producers of every intake path
// (Enqueue, EnqueueKey, EnqueueBatch) keep going while the broker goes
// away and while Stop runs with a deadline, in each WAL mode. Stop returns
// by its deadline (plus slack); without a WAL every accepted item was
// either delivered or handed to OnDrop, exactly once, and Stats agree;
// with one nothing is dropped and a queue opened on the same directory
// against a healthy broker delivers every accepted item the first run
// did not.
func TestAttackStopRacesProducersBrokerGone(t *testing.T) {
	for _, mode := range []vinequeue.WALMode{vinequeue.WALModeDefault, vinequeue.Overflow, vinequeue.Periodic, vinequeue.Sync} {
		name := "memory"
		if mode != vinequeue.WALModeDefault {
			name = mode.String()
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			y := newTally()
			cfg := vinequeue.Config[Record]{
				SizeOf:        RecordSize,
				BatchSize:     50,
				Workers:       4,
				FlushInterval: 5 * time.Millisecond,
				// Retry for longer than the test: Stop's deadline gives up.
				Retry:  vinequeue.RetryPolicy{MaxAttempts: 1000, InitialBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond},
				OnDrop: func(b []Record, _ error) { y.add(y.dropped, b) },
			}
			if mode != vinequeue.WALModeDefault {
				cfg.WAL = vinequeue.WALConfig{Dir: dir, Mode: mode, SyncInterval: 10 * time.Millisecond}
				cfg.Codec = RecordCodec{}
			}
			if mode == vinequeue.Overflow {
				// Small enough that the backlog behind the gone broker
				// spills: some items are on disk, others in memory.
				cfg.Memory = vinequeue.MemoryConfig{Limit: 256 << 10, Policy: vinequeue.Spill}
			}
			c := newCluster(t)
			p := newProducer(t, c, Config{DeliveryTimeout: 2 * time.Second})
			cfg.Send = y.sendInto(p.SendRecords)
			q, err := vinequeue.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			wait := produceMixed(t, q, y, 8)
			waitFor(t, "the first deliveries", func() bool { return q.Stats().Delivered >= 200 })
			c.Close()
			before := q.Stats()
			waitFor(t, "items accepted after the broker went", func() bool {
				st := q.Stats()
				// Under Spill keyed items cannot be spilled (their key's
				// order would not survive it): at the hard level
				// EnqueueKey waits as under Block, and so does a producer
				// that reaches one. Stop then races calls that wait.
				return st.Enqueued >= before.Enqueued+300 || (mode == vinequeue.Overflow && st.Enqueued > before.Enqueued && st.Blocked > before.Blocked)
			})

			ctx, cancel := context.WithTimeout(context.Background(), stopDeadline)
			defer cancel()
			start := time.Now()
			err = q.Stop(ctx) // the producers are still calling
			took := time.Since(start)
			wait()
			if took > stopDeadline+stopSlack {
				t.Errorf("Stop took %v with a %v deadline", took, stopDeadline)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Stop = %v; want its deadline", err)
			}
			p.Close()
			st := q.Stats()
			y.mu.Lock()
			accepted := len(y.accepted)
			t.Logf("Stop after %v: %v; accepted %d, delivered %d, dropped %d", took.Round(time.Millisecond), err, accepted, st.Delivered, st.Dropped)
			if st.Enqueued != uint64(accepted) {
				t.Errorf("Stats.Enqueued %d, calls accepted %d", st.Enqueued, accepted)
			}
			if st.Buffered != 0 {
				t.Errorf("Buffered %d after Stop", st.Buffered)
			}
			if mode == vinequeue.WALModeDefault {
				n := 0
				for v := range y.accepted {
					d, o := y.delivered[v], y.dropped[v]
					if d+o != 1 {
						if n++; n <= 5 {
							t.Errorf("%s: delivered %d times, dropped %d; want once in all", v, d, o)
						}
					}
				}
				drops := 0
				for _, k := range y.dropped {
					drops += k
				}
				if uint64(drops) != st.Dropped || st.Delivered+st.Dropped != st.Enqueued || drops == 0 {
					t.Errorf("OnDrop saw %d, Stats %+v: want OnDrop = Dropped > 0, Delivered+Dropped = Enqueued", drops, st)
				}
				y.mu.Unlock()
				return
			}
			drops := 0
			for _, k := range y.dropped {
				drops += k
			}
			if uint64(drops) != st.Dropped {
				t.Errorf("OnDrop saw %d items, Stats.Dropped %d", drops, st.Dropped)
			}
			if mode != vinequeue.Overflow && drops != 0 {
				t.Errorf("%d dropped with a %v WAL, which keeps what Stop leaves", drops, mode)
			}
			missing := map[string]bool{}
			for v := range y.accepted {
				if y.delivered[v] == 0 && y.dropped[v] == 0 {
					missing[v] = true
				}
			}
			dropped := y.dropped
			y.mu.Unlock()

			// Against a healthy broker, from the same directory.
			y2 := newTally()
			c2 := newCluster(t)
			p2 := newProducer(t, c2, Config{})
			cfg.Send = y2.sendInto(p2.SendRecords)
			cfg.OnDrop = func(b []Record, _ error) { y2.add(y2.dropped, b) }
			q2, err := vinequeue.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			fctx, fcancel := context.WithTimeout(context.Background(), time.Minute)
			defer fcancel()
			if err := q2.Flush(fctx); err != nil {
				t.Fatal(err)
			}
			if err := q2.Close(); err != nil {
				t.Fatal(err)
			}
			y2.mu.Lock()
			defer y2.mu.Unlock()
			n := 0
			for v := range missing {
				if y2.delivered[v] == 0 {
					if n++; n <= 5 {
						t.Errorf("%s: accepted, neither delivered nor dropped by the first run, nor replayed by the second", v)
					}
				}
			}
			twice := 0
			for v := range dropped {
				if y2.delivered[v] > 0 {
					if twice++; twice <= 5 {
						t.Errorf("%s: handed to OnDrop at Stop, and replayed by the next run", v)
					}
				}
			}
			if n > 0 || len(y2.dropped) > 0 {
				t.Errorf("%d of %d undelivered items lost; second run dropped %d", n, len(missing), len(y2.dropped))
			}
			t.Logf("second run delivered %d (%d were left, %d dropped, %d of those replayed)", len(y2.delivered), len(missing), len(dropped), twice)
		})
	}
}
