package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/vineroute/vinequeue"
)

// TestAttackOutagePerKeyOrder: the real queue (EnqueueKey, Workers 8,
// many batches in flight) writes to kfake while the broker goes away for
// longer than the client's DeliveryTimeout and comes back, twice: by
// refusing produce requests (NOT_LEADER on every partition) and by
// dropping every connection that sends one. Afterwards every key is
// complete and in order (a retried batch may repeat records already
// written, never put one ahead of an earlier one).
func TestAttackOutagePerKeyOrder(t *testing.T) {
	for _, how := range []string{"refuse", "drop"} {
		t.Run(how, func(t *testing.T) {
			c := newCluster(t)
			p := newProducer(t, c, Config{DeliveryTimeout: time.Second})
			if err := p.SendRecords(context.Background(), []Record{{Key: []byte("warm"), Value: []byte("warm:0")}}); err != nil {
				t.Fatal(err)
			}
			var failed atomic.Int64
			q, err := vinequeue.New(vinequeue.Config[Record]{
				Send: func(ctx context.Context, b []Record) error {
					err := p.SendRecords(ctx, b)
					if err != nil {
						failed.Add(1)
					}
					return err
				},
				SizeOf:        RecordSize,
				BatchSize:     50,
				Workers:       8,
				FlushInterval: 5 * time.Millisecond,
				Retry:         vinequeue.RetryPolicy{MaxAttempts: 1000, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond},
			})
			if err != nil {
				t.Fatal(err)
			}
			const keys, perKey = 64, 60
			enqueue := func(from, to int) {
				for seq := from; seq < to; seq++ {
					for k := range keys {
						key := fmt.Appendf(nil, "key-%d", k)
						if err := q.EnqueueKey(vinequeue.KeyOf(string(key)), Record{Key: key, Value: fmt.Appendf(nil, "key-%d:%d", k, seq)}); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			enqueue(0, 20)
			var down atomic.Bool
			var fault *kfake.FaultHandle
			switch how {
			case "refuse":
				fault = c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: testTopic, Err: kerr.NotLeaderForPartition, Count: -1})
			case "drop":
				down.Store(true)
				c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
					c.KeepControl()
					if down.Load() {
						return nil, errors.New("broker down"), true
					}
					return nil, nil, false
				})
			}
			enqueue(20, 40)
			// Down for longer than DeliveryTimeout. (With connections cut,
			// no send fails meanwhile: a record whose request may have been
			// written is retried by the client until the broker answers.)
			deadline := time.Now().Add(30 * time.Second)
			for how == "refuse" && failed.Load() < 8 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(1500 * time.Millisecond)
			t.Logf("down: %d failed sends, %d delivered of %d enqueued", failed.Load(), q.Stats().Delivered, q.Stats().Enqueued)
			if fault != nil {
				fault.Remove()
			}
			down.Store(false)
			enqueue(40, perKey)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := q.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			if st.Delivered != keys*perKey || st.Dropped != 0 {
				t.Fatalf("Delivered %d, Dropped %d; want %d, 0", st.Delivered, st.Dropped, keys*perKey)
			}
			recs := consumeAll(t, c)
			kept := recs[:0]
			for _, r := range recs {
				if string(r.Key) != "warm" {
					kept = append(kept, r)
				}
			}
			dups := checkPerKeyOrder(t, kept, keys, perKey, true)
			t.Logf("%d failed sends, %d records read back, %d duplicates", failed.Load(), len(kept), dups)
		})
	}
}

// TestAttackStopWhileConnectionsDrop: the broker accepts connections and
// cuts every one that carries a produce request (the client cannot learn
// the fate of what it wrote, so it never gives those records up by
// itself). Stop's deadline still bounds Stop, and nothing vanishes.
func TestAttackStopWhileConnectionsDrop(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{DeliveryTimeout: time.Second})
	if err := p.SendRecords(context.Background(), []Record{{Key: []byte("warm"), Value: []byte("warm:0")}}); err != nil {
		t.Fatal(err)
	}
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, errors.New("broker down"), true
	})
	var dropped atomic.Int64
	q, err := vinequeue.New(vinequeue.Config[Record]{
		Send: p.SendRecords, SizeOf: RecordSize, BatchSize: 50, Workers: 4, FlushInterval: 5 * time.Millisecond,
		Retry:  vinequeue.RetryPolicy{MaxAttempts: 1000, InitialBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond},
		OnDrop: func(b []Record, _ error) { dropped.Add(int64(len(b))) },
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		key := fmt.Appendf(nil, "key-%d", i%100)
		if err := q.EnqueueKey(vinequeue.KeyOf(string(key)), Record{Key: key, Value: key}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // sends in flight against the cut connections
	ctx, cancel := context.WithTimeout(context.Background(), stopDeadline)
	defer cancel()
	start := time.Now()
	err = q.Stop(ctx)
	took := time.Since(start)
	if took > stopDeadline+stopSlack {
		t.Errorf("Stop took %v with a %v deadline", took, stopDeadline)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v; want its deadline", err)
	}
	st := q.Stats()
	if st.Delivered+st.Dropped != 1000 || uint64(dropped.Load()) != st.Dropped {
		t.Errorf("Delivered %d + Dropped %d != 1000 (OnDrop saw %d)", st.Delivered, st.Dropped, dropped.Load())
	}
	t.Logf("Stop returned after %v: %v; delivered %d, dropped %d", took.Round(time.Millisecond), err, st.Delivered, st.Dropped)
}
