package vinequeue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/internal/engine"
)

// batchRecorder is a Send that counts batches and items.
type batchRecorder struct {
	batches, items atomic.Int64
	mu             sync.Mutex
	seen           map[string]int
}

func (r *batchRecorder) send(_ context.Context, b [][]byte) error {
	r.batches.Add(1)
	r.items.Add(int64(len(b)))
	r.mu.Lock()
	if r.seen == nil {
		r.seen = map[string]int{}
	}
	for _, v := range b {
		r.seen[string(v)]++
	}
	r.mu.Unlock()
	return nil
}

// TestSyncBatchesFill: Sync-mode commit groups are coalesced into batches
// of BatchSize; each group (about ten items) used to be a batch of its own.
func TestSyncBatchesFill(t *testing.T) {
	var r batchRecorder
	const batchSize = 200
	q, err := New(Config[[]byte]{
		Send: r.send, BatchSize: batchSize, FlushInterval: time.Hour,
		WAL: WALConfig{Dir: t.TempDir(), Mode: Sync, SegmentSize: 4 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	const producers, each = 64, 100
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := q.Enqueue([]byte(fmt.Sprintf("%d.%d", p, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	full := r.batches.Load() // every batch sent so far was cut by size
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if r.items.Load() != producers*each {
		t.Fatalf("delivered %d of %d", r.items.Load(), producers*each)
	}
	if want := int64(producers * each / batchSize); full < want-1 {
		t.Fatalf("%d batches sent before Close, want about %d full ones (mean batch %.1f items)",
			full, want, float64(r.items.Load())/float64(r.batches.Load()))
	}
	if mean := float64(r.items.Load()) / float64(r.batches.Load()); mean < 0.8*batchSize {
		t.Fatalf("mean batch %.1f items, want at least %.0f", mean, 0.8*batchSize)
	}
}

// TestSyncTooLargeFailsAlone: an item that cannot fit a record gets
// ErrTooLarge alone; items under the limit from many goroutines all go in.
// A commit group used to be one record, so all its callers failed together
// (3,073 of 3,200 16 KiB items refused against a 256 KiB record limit).
func TestSyncTooLargeFailsAlone(t *testing.T) {
	var r batchRecorder
	q, err := New(Config[[]byte]{
		Send: r.send, BatchSize: 64,
		WAL: WALConfig{Dir: t.TempDir(), Mode: Sync, SegmentSize: 256 << 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	limit := q.e.MaxRecord()
	var wg sync.WaitGroup
	var refused atomic.Int64
	for p := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				v := bytes.Repeat([]byte{byte(p)}, 16<<10)
				copy(v, strconv.Itoa(p*1000+i))
				if err := q.Enqueue(v); err != nil {
					refused.Add(1)
					t.Errorf("a 16 KiB item refused: %v", err)
					return
				}
			}
		}()
	}
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := q.Enqueue(make([]byte, limit+1)); !errors.Is(err, ErrTooLarge) {
				t.Errorf("an item over the record limit: %v, want ErrTooLarge", err)
			}
		}()
	}
	wg.Wait()
	n, err := q.EnqueueBatch([][]byte{[]byte("a"), make([]byte, limit+1), []byte("c")})
	if n != 1 || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("EnqueueBatch with an oversized second item: %d, %v; want 1, ErrTooLarge", n, err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if got := r.items.Load(); got != 64*50+1 {
		t.Fatalf("delivered %d, want %d", got, 64*50+1)
	}
}

// failingCodec refuses items that start with "bad".
type failingCodec struct{}

func (failingCodec) Append(dst []byte, v []byte) ([]byte, error) {
	if bytes.HasPrefix(v, []byte("bad")) {
		return dst, errors.New("cannot encode")
	}
	return append(dst, v...), nil
}
func (failingCodec) Decode(src []byte) ([]byte, error) { return append([]byte(nil), src...), nil }

// TestSyncCodecErrorFailsAlone: a codec error fails its own call only.
func TestSyncCodecErrorFailsAlone(t *testing.T) {
	var r batchRecorder
	q, err := New(Config[[]byte]{
		Send: r.send, Codec: failingCodec{},
		WAL: WALConfig{Dir: t.TempDir(), Mode: Sync, SegmentSize: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for p := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				v := []byte(fmt.Sprintf("ok%d.%d", p, i))
				if p%8 == 0 && i%5 == 0 {
					v = []byte("bad" + string(v))
					if err := q.Enqueue(v); err == nil {
						t.Error("an item the codec refuses was accepted")
					}
					continue
				}
				if err := q.Enqueue(v); err != nil {
					t.Errorf("an encodable item refused: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := r.items.Load(), int64(32*20-4*4); got != want {
		t.Fatalf("delivered %d, want %d", got, want)
	}
}

// TestRefusedKeyedNeverDelivered: EnqueueKey racing Stop in Sync mode. An
// item refused with ErrClosed used to be in the WAL already, and the next
// New delivered it (10 of 10).
func TestRefusedKeyedNeverDelivered(t *testing.T) {
	dir := t.TempDir()
	cfg := Config[[]byte]{
		Send: func(context.Context, [][]byte) error { return nil },
		WAL:  WALConfig{Dir: dir, Mode: Sync, SegmentSize: 1 << 20},
	}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	refused := map[string]bool{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for p := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; ; i++ {
				v := fmt.Sprintf("%d.%d", p, i)
				if err := q.EnqueueKey(uint64(p), []byte(v)); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Error(err)
					}
					mu.Lock()
					refused[v] = true
					mu.Unlock()
					return
				}
			}
		}()
	}
	close(start)
	waitFor(t, "some keyed items", func() bool { return q.Stats().Enqueued > 200 })
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	var r batchRecorder
	cfg.Send = r.send
	q2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}
	for v := range refused {
		if r.seen[v] > 0 {
			t.Errorf("%s was refused with ErrClosed and delivered after the restart", v)
		}
	}
	if len(refused) != 16 {
		t.Fatalf("%d producers saw ErrClosed, want 16", len(refused))
	}
}

// TestPeriodicWritesLargeBatches: a batch over the record limit is written
// as several records. It used to be never written, reported by a Warn only
// (4,704 of 5,000 items lost after a kill).
func TestPeriodicWritesLargeBatches(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	q, err := New(Config[[]byte]{
		Send:      gatedSend(release, nil),
		BatchSize: 1000, RingSize: 1024, FlushInterval: time.Hour,
		WAL: WALConfig{Dir: dir, Mode: Periodic, SyncInterval: 10 * time.Millisecond, SegmentSize: 256 << 10, Compression: NoCompression},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(release)
		if err := q.Close(); err != nil {
			t.Error(err)
		}
	}()
	const n = 1000 // 1000 x 1 KiB: one batch of about 1 MiB against records of under 256 KiB
	for i := range n {
		v := make([]byte, 1<<10)
		copy(v, strconv.Itoa(i))
		if err := q.Enqueue(v); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the large batch on disk", func() bool { return itemsOnDisk(t, dir) >= n })
}

// TestPeriodicFullWALRefuses: when Periodic mode cannot write (MaxBytes
// reached), producers get ErrWALFull within a ring's worth of items instead
// of items accepted with nil that could never be on disk; what was accepted
// is still delivered.
func TestPeriodicFullWALRefuses(t *testing.T) {
	up := make(chan struct{})
	var delivered atomic.Int64
	q, err := New(Config[[]byte]{
		Send: func(ctx context.Context, b [][]byte) error {
			select {
			case <-up:
				delivered.Add(int64(len(b)))
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		BatchSize: 16, RingSize: 16, FlushInterval: 10 * time.Millisecond,
		Retry: RetryPolicy{MaxAttempts: RetryForever, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond},
		WAL: WALConfig{Dir: t.TempDir(), Mode: Periodic, SegmentSize: 64 << 10, MaxBytes: 128 << 10,
			SyncInterval: 5 * time.Millisecond, Compression: NoCompression},
	})
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	var refusal error
	for i := 0; i < 100000 && refusal == nil; i++ {
		v := make([]byte, 512)
		copy(v, strconv.Itoa(i))
		switch err := q.Enqueue(v); {
		case err == nil:
			accepted++
		case errors.Is(err, ErrWALFull):
			refusal = err
		default:
			t.Fatal(err)
		}
	}
	if refusal == nil {
		t.Fatalf("accepted %d items of 512 B into a 128 KiB WAL whose sink is down, never ErrWALFull", accepted)
	}
	if h := q.Health(); h.Ready || !h.WALFull {
		t.Fatalf("Health while the WAL refuses everything: %+v", h)
	}
	close(up)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if delivered.Load() != int64(accepted) {
		t.Fatalf("delivered %d of %d accepted", delivered.Load(), accepted)
	}
}

// TestTooLargeAtTheCallInEveryMode: in Periodic and Overflow mode too, an
// item too large for any WAL record is refused at the call with
// ErrTooLarge, alone (it used to be accepted with nil and never written).
func TestTooLargeAtTheCallInEveryMode(t *testing.T) {
	for _, mode := range []WALMode{Periodic, Overflow} {
		t.Run(mode.String(), func(t *testing.T) {
			var r batchRecorder
			q, err := New(Config[[]byte]{
				Send: r.send,
				WAL:  WALConfig{Dir: t.TempDir(), Mode: mode, SegmentSize: 256 << 10},
			})
			if err != nil {
				t.Fatal(err)
			}
			big := make([]byte, q.e.MaxRecord())
			if err := q.Enqueue(big); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Enqueue of an item over the record limit: %v", err)
			}
			if err := q.EnqueueKey(1, big); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("EnqueueKey of an item over the record limit: %v", err)
			}
			n, err := q.EnqueueBatch([][]byte{[]byte("a"), big, []byte("c")})
			if n != 1 || !errors.Is(err, ErrTooLarge) {
				t.Fatalf("EnqueueBatch: %d, %v; want 1, ErrTooLarge", n, err)
			}
			fits := make([]byte, q.e.MaxRecord()-engine.MaxFrameOverhead)
			if err := q.Enqueue(fits); err != nil {
				t.Fatalf("an item that fits a record: %v", err)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			if r.items.Load() != 2 {
				t.Fatalf("delivered %d, want 2", r.items.Load())
			}
			if st := q.Stats(); st.Rejected != 3 {
				t.Fatalf("Rejected %d, want 3", st.Rejected)
			}
		})
	}
}
