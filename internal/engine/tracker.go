package engine

import "sync"

// tracker knows which batches are done. Batches are numbered in the order the
// collector cuts them and finish in any order (several senders, retries);
// low is the first number not done, so every batch below it is done. Flush
// and Stop wait for low to pass the number of the last batch they cover.
type tracker struct {
	mu      sync.Mutex
	low     uint64              // every seq < low is done
	next    uint64              // every seq < next has been cut
	done    map[uint64]struct{} // done seqs >= low
	waiters []trackWaiter
}

type trackWaiter struct {
	upto uint64 // done when low >= upto
	ch   chan error
}

// cut notes that seq has been cut. Collectors number batches from one
// counter but may report them out of order.
func (t *tracker) cut(seq uint64) {
	t.mu.Lock()
	t.next = max(t.next, seq+1)
	t.mu.Unlock()
}

// complete marks seq done and releases the waiters it satisfies.
func (t *tracker) complete(seq uint64) {
	t.mu.Lock()
	if seq == t.low {
		t.low++
		for {
			if _, ok := t.done[t.low]; !ok {
				break
			}
			delete(t.done, t.low)
			t.low++
		}
	} else {
		if t.done == nil {
			t.done = make(map[uint64]struct{})
		}
		t.done[seq] = struct{}{}
	}
	t.release()
	t.mu.Unlock()
}

// wait sends nil on ch (buffered) once every seq < upto is done.
func (t *tracker) wait(upto uint64, ch chan error) {
	t.mu.Lock()
	t.waiters = append(t.waiters, trackWaiter{upto, ch})
	t.release()
	t.mu.Unlock()
}

func (t *tracker) release() {
	kept := t.waiters[:0]
	for _, w := range t.waiters {
		if t.low >= w.upto {
			w.ch <- nil
		} else {
			kept = append(kept, w)
		}
	}
	clear(t.waiters[len(kept):])
	t.waiters = kept
}

// finished is how many batches are done so far.
func (t *tracker) finished() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.low + uint64(len(t.done))
}
