package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vineroute/vinequeue"
)

// TestQueueEndToEnd runs the whole path: producers call EnqueueKey from
// several goroutines (each owns some keys, so each key has one defined
// order), a queue with several workers batches them to SendRecords, a
// partition refuses some produce requests on the way, and a consumer reads
// every record back in per-key order.
func TestQueueEndToEnd(t *testing.T) {
	// Partition 1 refuses produce requests until a send has failed for it.
	c, p, fault := warmProducerWithFault(t, 1)

	var (
		mu       sync.Mutex
		sendErrs []error
	)
	send := func(ctx context.Context, batch []Record) error {
		err := p.SendRecords(ctx, batch)
		if err != nil {
			fault.Remove()
			mu.Lock()
			sendErrs = append(sendErrs, err)
			mu.Unlock()
		}
		return err
	}
	q, err := vinequeue.New(vinequeue.Config[Record]{
		SizeOf:        RecordSize,
		Send:          send,
		BatchSize:     64,
		Workers:       3,
		FlushInterval: 10 * time.Millisecond,
		Retry:         vinequeue.RetryPolicy{MaxAttempts: 20, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		OnDrop: func(batch []Record, reason error) {
			t.Errorf("dropped %d records: %v", len(batch), reason)
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	const producers, keysPer, perKey = 4, 6, 40
	var wg sync.WaitGroup
	for g := range producers {
		wg.Go(func() {
			for seq := range perKey {
				for k := range keysPer {
					key := fmt.Appendf(nil, "key-%d", g*keysPer+k)
					rec := Record{Key: key, Value: fmt.Appendf(nil, "%s:%d", key, seq)}
					if err := q.EnqueueKey(QueueKey(key), rec); err != nil {
						t.Errorf("EnqueueKey: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := q.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st := q.Stats()
	const total = producers * keysPer * perKey
	if st.Enqueued != total || st.Delivered != total || st.Dropped != 0 {
		t.Errorf("stats %+v: want %d enqueued and delivered, none dropped", st, total)
	}

	recs := consumeAll(t, c)
	kept := recs[:0]
	for _, r := range recs {
		if string(r.Key) != "warm" {
			kept = append(kept, r)
		}
	}
	dups := checkPerKeyOrder(t, kept, producers*keysPer, perKey, true)
	mu.Lock()
	defer mu.Unlock()
	if len(sendErrs) == 0 {
		t.Error("the injected broker errors never reached the queue")
	}
	for _, err := range sendErrs {
		if IsFatal(err) || !errors.Is(err, kgo.ErrRecordTimeout) {
			t.Errorf("send error %v: want a retryable kgo.ErrRecordTimeout", err)
		}
	}
	t.Logf("%d send errors retried by the queue (Stats.Retries %d), %d duplicates", len(sendErrs), st.Retries, dups)
}
