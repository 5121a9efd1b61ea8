package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/vineroute/vinequeue"
)

func init() {
	register(contender{
		name: "vinequeue",
		caveat: "per-P SPSC rings (1024 slots/P) → shard → batcher → 1 Send worker; always delivers in " +
			"batches (BatchSize 1000), so in the per-item scenarios its consumer is its Send; " +
			"the timed region ends with Flush, which makes the last partial batch leave; bounded by the memory governor",
		start: startVineQueue,
	})
}

// startVineQueue builds a memory-only queue whose Send checksums the batch
// and calls sendNoop: the same per-item work as the peers' sink.
func startVineQueue(tb testing.TB, rc runConfig) instance {
	var got, sum atomic.Uint64
	done := make(chan struct{})
	send := func(ctx context.Context, batch []uint64) error {
		var s uint64
		for _, v := range batch {
			s += v
		}
		_ = sendNoop(ctx, batch)
		sum.Add(s)
		if got.Add(uint64(len(batch))) == rc.items {
			close(done)
		}
		return nil
	}
	q, err := vinequeue.New(vinequeue.Config[uint64]{Send: send, BatchSize: batchSize})
	if err != nil {
		tb.Fatalf("vinequeue.New: %v", err)
	}
	var refused atomic.Uint64
	return instance{
		produce: func(first, count uint64) {
			for v := first + 1; v <= first+count; v++ {
				for {
					err := q.Enqueue(v)
					if err == nil {
						break
					}
					if !errors.Is(err, vinequeue.ErrFull) {
						tb.Errorf("vinequeue Enqueue: %v", err)
						return
					}
					// Governor at its hard level: retry like a bounded peer.
					refused.Add(1)
					runtime.Gosched()
				}
			}
		},
		producersDone: func() error { return q.Flush(context.Background()) },
		consume: func(want uint64) tally {
			<-done
			return tally{got: got.Load(), sum: sum.Load()}
		},
		close: func() {
			if err := q.Close(); err != nil {
				tb.Errorf("vinequeue Close: %v", err)
			}
			st := q.Stats()
			if st.Enqueued != rc.items || st.Delivered != rc.items {
				tb.Errorf("vinequeue Stats: enqueued %d delivered %d, want %d (%s)",
					st.Enqueued, st.Delivered, rc.items, fmt.Sprint(refused.Load(), " ErrFull retries"))
			}
		},
	}
}
