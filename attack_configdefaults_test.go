package vinequeue

import (
	"context"
	"testing"
)

// TestAttackBatchSizeDefaultWithinItsBounds: "Only Send is required", and
// BatchSize defaults to 1000. A Config that sets only MaxBatchSize below
// 1000 (or only MinBatchSize above it) is refused with ErrInvalidConfig
// naming BatchSize, a field the user never set: the default is not kept
// within the bounds the user gave.
func TestAttackBatchSizeDefaultWithinItsBounds(t *testing.T) {
	send := func(context.Context, [][]byte) error { return nil }
	for _, cfg := range []Config[[]byte]{
		{Send: send, MaxBatchSize: 500},
		{Send: send, MinBatchSize: 2000, MaxBatchSize: 4000},
	} {
		q, err := New(cfg)
		if err != nil {
			t.Errorf("Min %d, Max %d, BatchSize unset: %v", cfg.MinBatchSize, cfg.MaxBatchSize, err)
			continue
		}
		q.Close()
	}
}
