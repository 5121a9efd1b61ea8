package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// pollUntil polls cond every millisecond until it holds or the deadline
// passes.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestKeyedCreditSlack: EnqueueKey takes admission from its shard's credit.
// What the governor holds beyond the items is below one chunk per shard
// while items arrive, Stats.BytesHeld counts the items only, and the
// credit goes back once the shards idle a tick: the governor ends at 0.
func TestKeyedCreditSlack(t *testing.T) {
	defer goleak.VerifyNone(t)
	open := make(chan struct{})
	cfg := testConfig(func(ctx context.Context, _ []uint64) error {
		select {
		case <-open:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	cfg.Memory.Limit = 64 << 20
	cfg.FlushInterval = 10 * time.Millisecond
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var opened sync.Once
	openSink := func() { opened.Do(func() { close(open) }) }
	defer q.Close()
	defer openSink()                 // before Close, on a failure too
	rings := q.gov.Stats().BytesHeld // the rings' slots, charged in New
	chunk := q.keyed.chunk
	if chunk != keyedChunkMax {
		t.Fatalf("chunk %d with a 64 MiB limit, want %d", chunk, keyedChunkMax)
	}
	const items = 5000
	for i := range items {
		if err := q.EnqueueKey(uint64(i), uint64(i)); err != nil {
			t.Fatal(err)
		}
		if i%97 != 0 {
			continue
		}
		held, gov := int64(q.Stats().BytesHeld), q.gov.Stats().BytesHeld-rings
		if want := int64(i+1) * 8; held != want {
			t.Fatalf("after %d items BytesHeld %d, want %d (the items only)", i+1, held, want)
		}
		if slack := gov - held; slack < 0 || slack >= nKeyedShards*chunk {
			t.Fatalf("after %d items the governor holds %d, items %d: slack %d not in [0, %d)", i+1, gov, held, slack, nKeyedShards*chunk)
		}
	}
	// Credit taken in chunks: far fewer admissions than calls.
	var credit int64
	for i := range q.keyed.shards {
		c := q.keyed.shards[i].credit.Load()
		if c < 0 || c >= chunk {
			t.Errorf("shard %d holds credit %d, not in [0, %d)", i, c, chunk)
		}
		credit += c
	}
	if credit == 0 {
		t.Error("no shard holds credit: every call was admitted on its own")
	}
	openSink()
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "the idle shards' credit back", func() bool { return q.gov.Stats().BytesHeld == rings })
	if st := q.Stats(); st.Delivered != items || st.BytesHeld != 0 {
		t.Errorf("delivered %d of %d, BytesHeld %d", st.Delivered, items, st.BytesHeld)
	}
}

// TestKeyedSmallLimitAdmitsEachItem: with a limit so small that a chunk is
// below one item, every call is admitted on its own: no credit is left.
func TestKeyedSmallLimitAdmitsEachItem(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := testConfig(func(context.Context, []uint64) error { return nil })
	cfg.Memory.Limit = 8 << 10
	cfg.RingSize = 64
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.keyed.chunk >= 8 {
		t.Fatalf("chunk %d with an 8 KiB limit: want below one 8-byte item", q.keyed.chunk)
	}
	for i := range 100 {
		if err := q.EnqueueKey(uint64(i), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range q.keyed.shards {
		if c := q.keyed.shards[i].credit.Load(); c != 0 {
			t.Fatalf("shard %d holds credit %d", i, c)
		}
	}
}

// TestKeyedRefusedAtStopNeverDelivered: ungated EnqueueKey racing Stop.
// Every call that returned nil is delivered, none that returned ErrClosed
// is, and Stop gives back all credit.
func TestKeyedRefusedAtStopNeverDelivered(t *testing.T) {
	defer goleak.VerifyNone(t)
	var mu sync.Mutex
	seen := map[uint64]int{}
	cfg := testConfig(func(_ context.Context, b []uint64) error {
		mu.Lock()
		for _, v := range b {
			seen[v]++
		}
		mu.Unlock()
		return nil
	})
	cfg.Memory.Limit = 64 << 20
	cfg.Workers = 4
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rings := q.gov.Stats().BytesHeld // the rings' slots, charged in New
	const producers = 8
	accepted := make([][]uint64, producers)
	refused := make([]uint64, producers)
	var enqueued atomic.Int64
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(0); ; i++ {
				v := uint64(p)<<32 | i
				if err := q.EnqueueKey(v%1000, v); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Error(err)
					}
					refused[p] = v
					return
				}
				accepted[p] = append(accepted[p], v)
				enqueued.Add(1)
			}
		}()
	}
	pollUntil(t, "some keyed items", func() bool { return enqueued.Load() > 20000 })
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for p := range producers {
		for _, v := range accepted[p] {
			if seen[v] != 1 {
				t.Fatalf("accepted %x delivered %d times", v, seen[v])
			}
		}
		if seen[refused[p]] != 0 {
			t.Errorf("%x was refused with ErrClosed and delivered", refused[p])
		}
	}
	if held := q.gov.Stats().BytesHeld; held != rings {
		t.Errorf("the governor holds %d after Stop, %d in rings: credit not given back", held, rings)
	}
}
