package kafka

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// partitionOf is the partition the Producer's partitioner picks for key.
func partitionOf(key []byte) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic(testTopic).Partition(&kgo.Record{Key: key}, testPartitions))
}

// keysIn returns n keys whose records go to partitions for which want
// holds.
func keysIn(n int, prefix string, want func(int32) bool) [][]byte {
	var keys [][]byte
	for i := 0; len(keys) < n; i++ {
		if key := fmt.Appendf(nil, "%s-%d", prefix, i); want(partitionOf(key)) {
			keys = append(keys, key)
		}
	}
	return keys
}

// TestSendWaitsForItsOwnRecordsOnly has one send stuck on a partition that
// refuses produce requests (the client retries them) and checks that
// another send, to the other partitions, completes meanwhile: a send waits
// for its own records' acks only. Before, each send flushed the client and
// waited for every record in it, so the second send waited for the first.
func TestSendWaitsForItsOwnRecordsOnly(t *testing.T) {
	c := newCluster(t)
	p := newProducer(t, c, Config{})
	if err := p.SendValues(context.Background(), [][]byte{[]byte("warm")}); err != nil {
		t.Fatal(err)
	}
	fault := c.Fault(kfake.Fault{
		Keys:       []kmsg.Key{kmsg.Produce},
		Topic:      testTopic,
		Partitions: []int32{0},
		Err:        kerr.NotLeaderForPartition,
		Count:      -1,
	})
	stuck := make(chan error, 1)
	go func() {
		var batch []Record
		for _, key := range keysIn(8, "stuck", func(p int32) bool { return p == 0 }) {
			batch = append(batch, Record{Key: key, Value: key})
		}
		stuck <- p.SendRecords(context.Background(), batch)
	}()
	waitFor(t, "the stuck send to hit the fault", func() bool { return fault.Hits() > 0 })

	var batch []Record
	for _, key := range keysIn(64, "free", func(p int32) bool { return p != 0 }) {
		batch = append(batch, Record{Key: key, Value: key})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.SendRecords(ctx, batch); err != nil {
		t.Fatalf("send to healthy partitions while another send is stuck: %v", err)
	}
	select {
	case err := <-stuck:
		t.Fatalf("the stuck send returned %v while its partition still refused requests", err)
	default:
	}
	fault.Remove()
	if err := <-stuck; err != nil {
		t.Fatalf("stuck send after the fault was removed: %v", err)
	}
}

// TestCallCountsConcurrentPromises runs one call's promises from several
// goroutines, as the client does for a send whose records span partitions,
// a third of them failing, while the send reads the counts as at its
// context's end: a reading never has acked + failed above the records, and
// the last one has every record, once.
func TestCallCountsConcurrentPromises(t *testing.T) {
	const n, goroutines = 3000, 6
	released := 0
	c := &call{recs: make([]kgo.Record, n), done: make(chan struct{}, 1), release: func(k int) { released += k }}
	c.promise = c.onPromise
	c.left.Store(n)
	boom := kerr.NotLeaderForPartition
	start := make(chan struct{})
	for g := range goroutines {
		go func() {
			<-start
			for i := g; i < n; i += goroutines {
				var err error
				if i%3 == 0 {
					err = boom
				}
				c.promise(&c.recs[i], err)
			}
		}()
	}
	close(start)
	for finished := false; !finished; {
		select {
		case <-c.done:
			finished = true
		default:
		}
		res := c.result()
		if res.acked < 0 || res.failed < 0 || res.acked+res.failed > n {
			t.Fatalf("reading %+v: counts outside [0, %d]", res, n)
		}
	}
	res := c.result()
	if res.acked != 2*n/3 || res.failed != n/3 || res.first != boom || res.fatal != nil {
		t.Fatalf("result %+v, want %d acked, %d failed, first %v, no fatal", res, 2*n/3, n/3, boom)
	}
	if released != n {
		t.Fatalf("released %d records of room, want %d", released, n)
	}
}

// TestFeederWaitEndsWithContext holds the feeder slot, as a send handing
// over a large batch does, and checks that another send waits for it
// within its context only: it returns the context's error, retryable,
// having handed nothing to the client and given its room back; once the
// slot is free, sends go through again.
func TestFeederWaitEndsWithContext(t *testing.T) {
	c := newCluster(t)
	requests := countProduceRequests(c)
	p := newProducer(t, c, Config{MaxBufferedRecords: 100})
	warmUp(t, p)
	before := requests.Load()

	p.feeder <- struct{}{} // another send is handing over its records
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := p.SendRecords(ctx, workload(10, 2))
	if !errors.Is(err, context.DeadlineExceeded) || IsFatal(err) {
		t.Fatalf("send waiting for the feeder past its context: %v, want a retryable context.DeadlineExceeded", err)
	}
	if n := p.client.BufferedProduceRecords(); n != 0 {
		t.Fatalf("%d records in the client from a send that never got the feeder", n)
	}
	p.buffers.mu.Lock()
	free := p.buffers.free
	p.buffers.mu.Unlock()
	if free != 100 {
		t.Fatalf("%d of 100 buffer slots free after the send gave up, want all", free)
	}
	p.sends.mu.Lock()
	active, parked := p.sends.active, p.sends.parked
	p.sends.mu.Unlock()
	if active != 0 || parked != 0 {
		t.Fatalf("send gate counts %d active, %d parked after the send gave up, want none", active, parked)
	}
	if n := requests.Load() - before; n != 0 {
		t.Fatalf("%d produce requests while the feeder was held", n)
	}

	<-p.feeder
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if err := p.SendRecords(ctx2, workload(10, 2)); err != nil {
		t.Fatalf("send once the feeder was free: %v", err)
	}
}
