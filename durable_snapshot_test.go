package vinequeue

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// copyDir copies the regular files of src into dst (a snapshot of a live
// WAL directory: what a SIGKILL would leave, fsynced or not, which is a
// superset of what was fsynced).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		in, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(to)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDurableThroughSnapshotMixed: Periodic, three collectors, Enqueue,
// EnqueueKey and EnqueueAck at once, GOMAXPROCS moving, a small MaxBytes
// making writes fail now and then, and a slow Send. At a moment D is read
// from Stats.DurableThrough, then the directory is copied; every item whose
// call returned before D and that Send had not received by the end of the
// copy must replay from the copy. D never goes backwards.
func TestDurableThroughSnapshotMixed(t *testing.T) {
	if testing.Short() {
		t.Skip("stress")
	}
	for _, c := range []struct {
		name          string
		maxBytes, mem int64
		policy        Policy
	}{
		{"plain", 0, 0, PolicyDefault},
		{"wal-full", 2 << 20, 0, PolicyDefault},
		{"hard-spill", 0, 256 << 10, Spill}, // rings held full, batches spilled
		{"hard-reject", 0, 256 << 10, Reject},
	} {
		t.Run(c.name, func(t *testing.T) { durableSnapshotMixed(t, c.maxBytes, MemoryConfig{Limit: c.mem, Policy: c.policy}) })
	}
}

func durableSnapshotMixed(t *testing.T, maxBytes int64, mem MemoryConfig) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	dir := t.TempDir()
	var dmu sync.Mutex
	delivered := map[uint64]bool{}
	var gate atomic.Bool
	send := func(ctx context.Context, b [][]byte) error {
		for gate.Load() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
		dmu.Lock()
		for _, v := range b {
			delivered[binary.LittleEndian.Uint64(v)] = true
		}
		dmu.Unlock()
		return nil
	}
	q, err := New(Config[[]byte]{
		Send:          send,
		BatchSize:     64,
		FlushInterval: 5 * time.Millisecond,
		Workers:       2,
		Collectors:    3,
		RingSize:      64,
		Memory:        mem,
		WAL:           WALConfig{Dir: dir, Mode: Periodic, SyncInterval: 3 * time.Millisecond, SegmentSize: 64 << 10, MaxBytes: maxBytes},
	})
	if err != nil {
		t.Fatal(err)
	}
	type acc struct {
		id uint64
		at int64
	}
	var amu sync.Mutex
	var accepted []acc
	var next atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := next.Add(1)
				if id > 400_000 { // enough to cover every path; the replay stays cheap
					<-stop
					return
				}
				v := make([]byte, 8, 64)
				binary.LittleEndian.PutUint64(v, id)
				v = v[:64]
				var err error
				switch p {
				case 0, 1:
					err = q.Enqueue(v)
				case 2:
					err = q.EnqueueKey(uint64(i%7), v)
				case 3:
					ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
					err = q.EnqueueAck(ctx, v, AckDelivered)
					cancel()
					if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrDropped) {
						err = nil // accepted
					}
				}
				if err == nil {
					at := time.Now().UnixNano()
					amu.Lock()
					accepted = append(accepted, acc{id, at})
					amu.Unlock()
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				// The gate opens for good only here: a Store(false) by
				// the test could be undone by a last turn of this loop
				// (the select picks at random once stop is closed), and
				// with the gate shut the producers held at the hard
				// level would never return.
				gate.Store(false)
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.GOMAXPROCS(1 + i%3)
			gate.Store(i%5 < 2)
		}
	}()
	var last time.Time
	var d time.Time
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		cur := q.Stats().DurableThrough
		if cur.Before(last) {
			t.Fatalf("DurableThrough went back from %v to %v", last, cur)
		}
		last = cur
		time.Sleep(time.Millisecond) // sampling a moving value
	}
	d = q.Stats().DurableThrough
	snap := t.TempDir()
	copyDir(t, dir, snap)
	dmu.Lock()
	seen := make(map[uint64]bool, len(delivered))
	for k := range delivered {
		seen[k] = true
	}
	dmu.Unlock()
	close(stop)
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := q.Stop(ctx); err != nil {
		t.Log("stop:", err)
	}
	if d.IsZero() && maxBytes == 0 && mem.Limit == 0 {
		t.Fatal("DurableThrough never moved") // with a full WAL it may not
	}
	// Replay the snapshot.
	var rmu sync.Mutex
	replayed := map[uint64]bool{}
	r, err := New(Config[[]byte]{
		Send: func(_ context.Context, b [][]byte) error {
			rmu.Lock()
			for _, v := range b {
				replayed[binary.LittleEndian.Uint64(v)] = true
			}
			rmu.Unlock()
			return nil
		},
		WAL: WALConfig{Dir: snap, Mode: Periodic, SegmentSize: 64 << 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	amu.Lock()
	defer amu.Unlock()
	lost, covered := 0, 0
	for _, a := range accepted {
		if a.at >= d.UnixNano() || seen[a.id] {
			continue
		}
		covered++
		if !replayed[a.id] {
			lost++
			if lost <= 5 {
				t.Errorf("item %d returned %v before DurableThrough %v, not delivered, not in the snapshot", a.id, time.Unix(0, a.at), d)
			}
		}
	}
	t.Logf("accepted %d, covered by D and undelivered %d, lost %d, rejected %d, spilled %d", len(accepted), covered, lost, q.Stats().Rejected, q.Stats().Spilled)
}
