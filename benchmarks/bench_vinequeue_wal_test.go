package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/vineroute/vinequeue"
	"github.com/vineroute/vinequeue/wal"
)

func init() {
	registerWAL(walContender{
		name: "vinequeue-wal",
		caveat: "vinequeue/wal Log.AppendItem, default options (snappy, fsync on): the log's one group commit, " +
			"which the Queue's Sync mode uses; concurrent appenders share one record and one fdatasync. Recovery " +
			"reads records of 1000 framed items (how the queue writes batches), the peers one record per item",
		open:    openVineWAL,
		prepare: prepareVineWAL,
		recover: recoverVineWAL,
	})
	registerWAL(walContender{
		name: "vinequeue",
		caveat: "the Queue facade in WAL Sync mode ([]byte items, no-op Send): Enqueue returns once the item " +
			"is durable (group commit); the item is also delivered. Recovery: a new Queue replays the log " +
			"into its Send until every item is delivered",
		probe:   probeQueueSync,
		open:    openQueueSync,
		prepare: prepareVineWAL,
		recover: recoverQueue,
	})
}

func openVineWAL(tb testing.TB, dir string) walInstance {
	l, err := wal.Open(dir, wal.Options{})
	if err != nil {
		tb.Fatalf("wal.Open: %v", err)
	}
	return walInstance{
		append: func(p []byte) error { _, err := l.AppendItem(p); return err },
		close:  l.Close,
	}
}

func prepareVineWAL(tb testing.TB, dir string, n int) {
	l, err := wal.Open(dir, wal.Options{NoSync: true}) // preparation only; Close syncs
	if err != nil {
		tb.Fatalf("wal.Open: %v", err)
	}
	var rec []byte
	for i := 1; i <= n; i++ {
		rec = wal.AppendFrame(rec, payload(uint64(i)))
		if i%batchSize == 0 || i == n {
			if _, err := l.Write(rec); err != nil {
				tb.Fatalf("wal Write: %v", err)
			}
			rec = rec[:0]
		}
	}
	if err := l.Close(); err != nil {
		tb.Fatalf("wal Close: %v", err)
	}
}

func recoverVineWAL(tb testing.TB, dir string, n int) int {
	l, err := wal.Open(dir, wal.Options{})
	if err != nil {
		tb.Fatalf("wal.Open: %v", err)
	}
	defer l.Close()
	got := 0
	err = l.Replay(func(id uint64, rec []byte, _ []wal.ItemRange) error {
		return wal.ForEachItem(rec, func(item []byte) error {
			if len(item) != itemSize {
				return fmt.Errorf("record %d: item of %d bytes", id, len(item))
			}
			got++
			return nil
		})
	})
	if err != nil {
		tb.Fatalf("wal Replay: %v", err)
	}
	return got
}

// probeQueueSync reports whether this build of the queue accepts a WAL in
// Sync mode; the answer is the queue's own error when it does not.
var probeQueueSync = sync.OnceValue(func() string {
	dir, err := os.MkdirTemp("", "vinebench-probe-")
	if err != nil {
		return "cannot create a probe directory: " + err.Error()
	}
	defer os.RemoveAll(dir)
	q, err := vinequeue.New(vinequeue.Config[[]byte]{
		Send: func(context.Context, [][]byte) error { return nil },
		WAL:  vinequeue.WALConfig{Dir: dir, Mode: vinequeue.Sync},
	})
	if err != nil {
		return "vinequeue.New with WAL Sync mode: " + err.Error()
	}
	if err := q.Close(); err != nil {
		return "vinequeue Close with WAL Sync mode: " + err.Error()
	}
	return ""
})

func openQueueSync(tb testing.TB, dir string) walInstance {
	q, err := vinequeue.New(vinequeue.Config[[]byte]{
		Send: func(ctx context.Context, batch [][]byte) error { return nil },
		WAL:  vinequeue.WALConfig{Dir: dir, Mode: vinequeue.Sync},
	})
	if err != nil {
		tb.Fatalf("vinequeue.New: %v", err)
	}
	return walInstance{
		append: func(p []byte) error {
			err := q.Enqueue(p)
			if errors.Is(err, vinequeue.ErrFull) {
				return fmt.Errorf("governor refused a durable append: %w", err)
			}
			return err
		},
		close: q.Close,
	}
}

// recoverQueue opens a Queue on dir and waits until its replay has
// delivered the n items prepareVineWAL wrote: recovery as a user sees it.
func recoverQueue(tb testing.TB, dir string, n int) int {
	var got int64
	var mu sync.Mutex
	done := make(chan struct{})
	q, err := vinequeue.New(vinequeue.Config[[]byte]{
		Send: func(_ context.Context, batch [][]byte) error {
			mu.Lock()
			defer mu.Unlock()
			got += int64(len(batch))
			if got == int64(n) {
				close(done)
			}
			return nil
		},
		Workers: 4,
		WAL:     vinequeue.WALConfig{Dir: dir, Mode: vinequeue.Sync},
	})
	if err != nil {
		tb.Fatalf("vinequeue.New: %v", err)
	}
	<-done
	if err := q.Close(); err != nil {
		tb.Fatalf("vinequeue Close: %v", err)
	}
	return int(got)
}
