package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestFlushDuringReplay: Flush called while the backlog New found is still
// replaying returns once that backlog is delivered too: its items were
// accepted (by the process before) before the call. Flush used to cover only
// the items this process accepted, and returned with the replay under way
// and Buffered above 0.
func TestFlushDuringReplay(t *testing.T) {
	for _, mode := range []WALMode{Periodic, Sync} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			// A first queue leaves a backlog on disk: its sink never
			// succeeds and its Stop runs out of time.
			down := func(ctx context.Context, _ []string) error { <-ctx.Done(); return ctx.Err() }
			q, err := New(Config[string]{Send: down, BatchSize: 8, FlushInterval: 5 * time.Millisecond,
				WAL: WALConfig{Dir: dir, Mode: mode, SyncInterval: 5 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 400 {
				if err := q.EnqueueKey(uint64(i%7), fmt.Sprint("old", i)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stop: %v, want its deadline", err)
			}
			cancel()

			// The second queue replays it into a slow sink; meanwhile new
			// items come in and Flush is called.
			var mu sync.Mutex
			got := map[string]bool{}
			slow := func(ctx context.Context, b []string) error {
				select {
				case <-time.After(2 * time.Millisecond): // a slow sink, not a wait for an event
				case <-ctx.Done():
					return ctx.Err()
				}
				mu.Lock()
				for _, v := range b {
					got[v] = true
				}
				mu.Unlock()
				return nil
			}
			q, err = New(Config[string]{Send: slow, BatchSize: 8, FlushInterval: 5 * time.Millisecond,
				WAL: WALConfig{Dir: dir, Mode: mode, SyncInterval: 5 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			if !q.Stats().Backlog.Replaying {
				t.Skip("the replay ended before the test could call Flush")
			}
			if err := q.Enqueue("new-plain"); err != nil {
				t.Fatal(err)
			}
			ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := q.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			mu.Lock()
			defer mu.Unlock()
			if st.Buffered != 0 || st.Backlog.Replaying {
				t.Errorf("after Flush: Buffered %d, Replaying %v; want 0, false", st.Buffered, st.Backlog.Replaying)
			}
			missing := 0
			for i := range 400 {
				if !got[fmt.Sprint("old", i)] {
					missing++
				}
			}
			if missing != 0 || !got["new-plain"] {
				t.Errorf("after Flush: %d of the 400 replayed items undelivered, the new one delivered: %v", missing, got["new-plain"])
			}
		})
	}
}
