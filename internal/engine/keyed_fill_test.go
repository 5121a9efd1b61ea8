package engine

import (
	"container/heap"
	"math/rand/v2"
	"testing"
)

// TestKeyedSteadyFlowFillsBatches drives the keyed cutting (cutKeyed) on
// a virtual clock, as Sync mode's intake feeds it: every gap, a commit
// group of items on random keys enters the shards at once; a batch stays
// with its sender for 2–3 ms; the collector ticks every 5 ms
// (FlushInterval 10 ms), and cuts as it is woken. The flows are the real
// job's (BatchSize 1000: 32 producers at 240k items a second, 256 at
// 620k), and the batches must fill: at least 0.95 × BatchSize on average.
// Counting an item's tick while its shard had a batch in flight, and
// gathering the shards in turn whatever their items' age, made 783 and
// 946 here (the real job: 849–878 and 886–942). Every item is delivered,
// each shard's in order.
func TestKeyedSteadyFlowFillsBatches(t *testing.T) {
	for _, flow := range []struct{ rate, group int64 }{{240_000, 32}, {620_000, 256}} {
		const size, total, tick = 1000, 300_000, 5000 // items; µs
		q := bareQueue(size)
		q.free = make(chan *pending[int], 64)
		q.tier = memoryTier[int]{}
		q.keyed.used.Store(true)
		c := &collector[int]{q: q}
		rng := rand.New(rand.NewPCG(1, 2))
		gap := flow.group * 1_000_000 / flow.rate
		var sends simSends
		var next [nKeyedShards]int // each shard's next item
		var arrived, delivered, batches int
		var now, nextGroup, nextTick int64 = 0, 0, tick
		for delivered < total {
			now = nextTick
			if arrived < total && nextGroup < now {
				now = nextGroup
			}
			if len(sends) > 0 && sends[0].at < now {
				now = sends[0].at
			}
			switch {
			case len(sends) > 0 && sends[0].at == now:
				b := heap.Pop(&sends).(simSend).b
				for i, v := range b.items {
					s := b.keys[i]
					if v != next[s] {
						t.Fatalf("shard %d: item %d after %d", s, v, next[s]-1)
					}
					next[s]++
				}
				delivered += len(b.items)
				batches++
				for _, s := range b.shards {
					s.inflight.Store(false) // as finish does
				}
				q.keyed.kick.Store(true)
				q.putBatch(b)
			case arrived < total && nextGroup == now:
				nextGroup += gap
				for range flow.group {
					i := ShardOf(rng.Uint64())
					s := &q.keyed.shards[i]
					s.mu.Lock()
					// The item is its index in the shard; its key
					// the shard's.
					s.push(int(s.cut)+len(s.items), uint64(i), true, 0)
					n := len(s.items)
					s.queued.Store(int64(n))
					s.mu.Unlock()
					q.wakeForKeyed(s, uint64(n))
					arrived++
				}
			default:
				nextTick += tick
				c.cutKeyed(cutPartial)
			}
			how := cutFull
			if arrived == total {
				how = cutStop // the end of the run: what is left goes
			}
			c.cutKeyed(how)
			for c.ready.len() > 0 {
				heap.Push(&sends, simSend{at: now + 2000 + rng.Int64N(1000), b: c.ready.pop()})
			}
		}
		if mean := delivered / batches; mean < size*95/100 {
			t.Errorf("%d items a second in groups of %d: %d batches, %d items each on average; want at least %d", flow.rate, flow.group, batches, mean, size*95/100)
		}
	}
}

// simSend is a batch with its sender until at (µs, virtual).
type simSend struct {
	at int64
	b  *pending[int]
}

// simSends is the batches with their senders, the first to finish first.
type simSends []simSend

func (h simSends) Len() int           { return len(h) }
func (h simSends) Less(i, j int) bool { return h[i].at < h[j].at }
func (h simSends) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *simSends) Push(x any)        { *h = append(*h, x.(simSend)) }
func (h *simSends) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
