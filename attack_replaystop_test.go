package vinequeue

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackStopDuringReplayWithAStuckSend: a backlog replays into a Send
// that ignores its ctx (held until the test ends), while new items arrive
// in Sync mode, and Stop runs out of time. Stop returns with every item
// counted (the replayed batch in Send, the replay's unread records and the
// new items all LeftOnDisk: nothing dropped with a WAL, nothing Buffered),
// and the next New delivers every item, old and new, at least once.
func TestAttackStopDuringReplayWithAStuckSend(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	dir := t.TempDir()
	const old = 500
	leaveBacklog(t, dir, Sync, old)

	stuck := make(chan struct{})
	entered := make(chan struct{}, 1)
	cfg := Config[[]byte]{
		Send:      sendIgnoringCtx(entered, stuck),
		BatchSize: 50, Workers: 2, FlushInterval: 5 * time.Millisecond,
		WAL: WALConfig{Dir: dir, Mode: Sync},
	}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	const fresh = 200
	for range fresh {
		if err := q.EnqueueKey(3, []byte("new")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v; want its deadline", err)
	}
	if err := q.Close(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close after Stop = %v; want Stop's result again", err)
	}
	st := q.Stats()
	if st.Buffered != 0 || st.Dropped != 0 || st.Enqueued != fresh || st.Enqueued+st.Replayed != st.Delivered+st.LeftOnDisk {
		t.Fatalf("right after Stop: Enqueued %d, Replayed %d, Delivered %d, Dropped %d, LeftOnDisk %d, Buffered %d",
			st.Enqueued, st.Replayed, st.Delivered, st.Dropped, st.LeftOnDisk, st.Buffered)
	}
	close(stuck)
	goleak.VerifyNone(t, ignore)

	var mu sync.Mutex
	var gotOld, gotNew int
	cfg.Send = func(_ context.Context, b [][]byte) error {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range b {
			if bytes.Equal(v, []byte("new")) {
				gotNew++
			} else {
				gotOld++
			}
		}
		return nil
	}
	q2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if gotOld != old || gotNew != fresh {
		t.Fatalf("the next New delivered %d of %d old items and %d of %d new ones", gotOld, old, gotNew, fresh)
	}
}
