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

// TestAttackFlushDuringReplay: Flush promises to return nil only once every
// item accepted before the call has been delivered or given up on. While a
// backlog replays (its Send held here), keyed items wait for the replay to
// end, and so do unkeyed ones behind a busy sender. Flush must then either
// wait for them (until its ctx) or return nil with them delivered; it must
// not return nil while an item it covers is still waiting.
func TestAttackFlushDuringReplay(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	leaveBacklog(t, dir, Sync, 10)

	release := make(chan struct{})
	var mu sync.Mutex
	delivered := map[string]int{}
	q, err := New(Config[[]byte]{
		Send: func(ctx context.Context, b [][]byte) error {
			if bytes.HasPrefix(b[0], []byte("old")) {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			mu.Lock()
			for _, v := range b {
				delivered[string(v)]++
			}
			mu.Unlock()
			return nil
		},
		Workers:       2,
		FlushInterval: 10 * time.Millisecond,
		WAL:           WALConfig{Dir: dir, Mode: Sync},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	defer close(release)
	if err := q.EnqueueKey(7, []byte("keyed")); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue([]byte("plain")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ferr := q.Flush(ctx)
	mu.Lock()
	keyed, plain := delivered["keyed"], delivered["plain"]
	mu.Unlock()
	if ferr == nil && (keyed != 1 || plain != 1) {
		t.Fatalf("Flush returned nil with keyed delivered %d times, plain %d times (the replay is held)", keyed, plain)
	}
	if ferr != nil && !errors.Is(ferr, context.DeadlineExceeded) {
		t.Fatalf("Flush = %v", ferr)
	}
	t.Logf("Flush = %v; keyed %d, plain %d", ferr, keyed, plain)
}
