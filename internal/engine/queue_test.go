package engine

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vineroute/vinequeue/batch"
)

// testConfig is a Config as the root package fills it in by default.
func testConfig[T any](send func(context.Context, []T) error) Config[T] {
	return Config[T]{
		Send:          send,
		BatchSize:     1000,
		MinBatchSize:  1,
		MaxBatchSize:  10000,
		FlushInterval: 5 * time.Second,
		Workers:       1,
		RingSize:      1024,
		Memory:        MemoryConfig{Soft: 0.80, Hard: 0.95, Policy: Reject},
		Retry:         batch.RetryPolicy{}.WithDefaults(),
		Logger:        slog.New(slog.DiscardHandler),
	}
}

// bytesCodec is the root package's built-in Codec for []byte, for tests.
type bytesCodec struct{}

func (bytesCodec) Append(dst []byte, v []byte) ([]byte, error) { return append(dst, v...), nil }
func (bytesCodec) Decode(src []byte) ([]byte, error)           { return append([]byte(nil), src...), nil }

// TestNegativeSizeOfCountsNothing: a SizeOf that returns a negative size
// would credit the memory governor and switch the bound off; it counts as 0.
func TestNegativeSizeOfCountsNothing(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := testConfig(func(context.Context, []int) error { return nil })
	cfg.SizeOf = func(int) int { return -1 << 40 }
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if n := q.sizeOf(1); n != 0 {
		t.Fatalf("sizeOf = %d, want 0", n)
	}
}

// TestTierChosenInNew: New picks the tier from the mode, and with it the
// capabilities (a log, a spiller, rings) and nothing else.
func TestTierChosenInNew(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, c := range []struct {
		mode                 WALMode
		policy               Policy
		tier                 string
		log, spiller, rings  bool
		checkpoint, itemLimt bool
	}{
		{0, Reject, "memory", false, false, true, false, false},
		{0, Block, "memory", false, false, true, false, false},
		{Overflow, Spill, "overflow", true, true, true, false, true},
		{Overflow, Reject, "overflow", true, false, true, false, true},
		{Periodic, Spill, "periodic", true, true, true, true, true},
		{Periodic, Block, "periodic", true, false, true, true, true},
		{Sync, Spill, "sync", true, true, false, false, false},
		{Sync, Reject, "sync", true, false, false, false, false},
	} {
		cfg := testConfig(func(context.Context, [][]byte) error { return nil })
		cfg.Memory.Policy = c.policy
		if c.mode != 0 {
			cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: c.mode, SegmentSize: 1 << 20}
			cfg.Codec = bytesCodec{}
		}
		q, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var tier string
		switch q.tier.(type) {
		case memoryTier[[]byte]:
			tier = "memory"
		case overflowTier[[]byte]:
			tier = "overflow"
		case periodicTier[[]byte]:
			tier = "periodic"
		case syncTier[[]byte]:
			tier = "sync"
		}
		name := tier + "/" + string(rune('0'+c.policy))
		if tier != c.tier {
			t.Errorf("mode %d: tier %q, want %q", c.mode, tier, c.tier)
		}
		if (q.wal != nil) != c.log || (q.spill != nil) != c.spiller || (len(q.fast) > 0) != c.rings {
			t.Errorf("%s: log %v spiller %v rings %v, want %v %v %v", name, q.wal != nil, q.spill != nil, len(q.fast) > 0, c.log, c.spiller, c.rings)
		}
		if (q.tier.checkpointEvery() > 0) != c.checkpoint || (q.itemLimit > 0) != c.itemLimt {
			t.Errorf("%s: checkpoint every %v, item limit %d", name, q.tier.checkpointEvery(), q.itemLimit)
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
