package vinequeue

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestAttackReplayOverADamagedLog: a Sync-mode queue whose sink is down
// leaves 200 one-item records in the WAL; a few bytes in the middle of the
// segment are then overwritten, as a bad sector would. The next New starts
// anyway, delivers every intact record once, and counts every lost record
// in Stats.Corrupt: delivered + Corrupt == 200 (one item per record), the
// delivered items all among those written, and the identity holds.
func TestAttackReplayOverADamagedLog(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	const n = 200
	wcfg := WALConfig{Dir: dir, Mode: Sync, SegmentSize: 1 << 20, Compression: NoCompression}
	q, err := New(Config[string]{
		Send: func(ctx context.Context, _ []string) error { <-ctx.Done(); return ctx.Err() },
		WAL:  wcfg,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := q.Enqueue("item-" + strconv.Itoa(i)); err != nil { // one call, one record
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_ = q.Stop(ctx)
	if st := q.Stats(); st.LeftOnDisk != n {
		t.Fatalf("left %d items in the WAL, want %d", st.LeftOnDisk, n)
	}

	segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(segs) == 0 {
		ents, _ := os.ReadDir(dir)
		t.Fatalf("no segment found (%v): %v", err, ents)
	}
	f, err := os.OpenFile(segs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("a bad sector's garbage"), 3000); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var mu sync.Mutex
	got := map[string]int{}
	q2, err := New(Config[string]{
		Send: func(_ context.Context, b []string) error {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range b {
				got[v]++
			}
			return nil
		},
		WAL: wcfg,
	})
	if err != nil {
		t.Fatalf("New over a damaged log: %v", err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	st := q2.Stats()
	mu.Lock()
	defer mu.Unlock()
	for v, k := range got {
		if k != 1 {
			t.Errorf("%s delivered %d times", v, k)
		}
	}
	if st.Corrupt == 0 || uint64(len(got))+st.Corrupt != n || st.Replayed != st.Delivered || st.Buffered != 0 {
		t.Fatalf("delivered %d distinct, Stats: Replayed %d, Delivered %d, Corrupt %d, Buffered %d; want delivered + Corrupt = %d",
			len(got), st.Replayed, st.Delivered, st.Corrupt, st.Buffered, n)
	}
}
