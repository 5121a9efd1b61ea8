package vinequeue

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/wal"
)

// TestWALEncryptionReplaysWithTheKeyOnly: items left in an encrypted WAL
// (the sink down, Stop out of time) are nowhere on disk in the clear; a
// queue with a wrong, missing or short key is refused with
// ErrInvalidConfig; the right key replays every item.
func TestWALEncryptionReplaysWithTheKeyOnly(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{0x42}, 32)
	down := sinkDownConfig(dir, Sync)
	down.WAL.EncryptionKey = key
	q, err := New(down)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := range n {
		if err := q.Enqueue([]byte("secret-event-" + strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want DeadlineExceeded", err)
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if bytes.Contains(b, []byte("secret-event")) {
			t.Errorf("%s holds an item in the clear", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	s := newSink[string]()
	cfg := Config[string]{Send: s.send, BatchSize: 50, FlushInterval: 10 * time.Millisecond,
		WAL: WALConfig{Dir: dir, Mode: Sync, SegmentSize: 1 << 20}}
	for name, k := range map[string][]byte{"no key": nil, "wrong key": bytes.Repeat([]byte{7}, 32), "short key": key[:16]} {
		c := cfg
		c.WAL.EncryptionKey = k
		if _, err := New(c); !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, wal.ErrKey) {
			t.Fatalf("%s: New = %v, want ErrInvalidConfig (wal.ErrKey)", name, err)
		}
	}
	if _, err := New(Config[string]{Send: s.send, WAL: WALConfig{EncryptionKey: key}}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("a key without a Dir: New = %v, want ErrInvalidConfig", err)
	}
	cfg.WAL.EncryptionKey = bytes.Repeat([]byte{9}, 32) // rotated: the old key decrypts
	cfg.WAL.DecryptionKeys = [][]byte{key}
	q2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replay", func() bool { return s.n.Load() >= n })
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if s.seen["secret-event-"+strconv.Itoa(i)] == 0 {
			t.Fatalf("item %d not replayed", i)
		}
	}
}
