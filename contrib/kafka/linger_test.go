package kafka

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/vineroute/vinequeue"
)

// With the client's linger at 0, a produce request left as soon as a send's
// first record was buffered and the next ones carried whatever arrived
// during one round trip: some hundred records each, a fraction of one
// batch, where franz-go used alone (10ms linger) packs thousands. These
// tests count the produce requests at the broker.

// countProduceRequests counts the produce requests c receives, letting each
// through.
func countProduceRequests(c *kfake.Cluster) *atomic.Int64 {
	var n atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		n.Add(1)
		return nil, nil, false
	})
	return &n
}

// warmUp has the client learn the topic's partitions. Records produced
// before that wait in the client for the metadata and then linger, since
// the send's kick came before they had a partition: the kick cannot help
// the very first send. A Flush ends that linger.
func warmUp(t *testing.T, p *Producer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sent := make(chan error, 1)
	go func() { sent <- p.SendValues(ctx, [][]byte{[]byte("warm")}) }()
	for {
		if err := p.client.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
		select {
		case err := <-sent:
			if err != nil {
				t.Fatalf("warm-up send: %v", err)
			}
			return
		case <-ctx.Done():
			t.Fatal("warm-up send still waiting")
		default: // the record was not in the client yet: flush again
		}
	}
}

// TestLoneSendIsOneRequest: a send that is the only one in progress has
// nothing to wait for once its records are handed over, so they leave in a
// single produce request at once, however long the client would linger. A
// linger of a minute against a 30 s context makes a missing kick fail the
// send; a request sent before the whole batch was buffered (linger 0, as
// before) makes the count exceed one.
func TestLoneSendIsOneRequest(t *testing.T) {
	c := newCluster(t)
	requests := countProduceRequests(c)
	p := newProducer(t, c, Config{ClientOpts: []kgo.Opt{kgo.ProducerLinger(time.Minute)}})
	warmUp(t, p)
	before := requests.Load()

	batch := workload(500, 4) // 2000 records over every partition
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.SendRecords(ctx, batch); err != nil {
		t.Fatalf("send: %v", err)
	}
	if n := requests.Load() - before; n != 1 {
		t.Errorf("%d produce requests for one send of %d records, want 1", n, len(batch))
	}
}

// TestQueueRunFillsRequests runs 40,000 keyed records through a queue
// with 8 Workers and counts the produce requests: at most two for every
// five batches, since the sends in progress share requests. With linger
// 0 this run made about 0.6 requests per batch (some 550 records each, in
// batches of up to 500); with a kick whenever every send was parked, about
// 0.15 (some 2300 records each); now that the sends form two groups that
// take turns, 0.1-0.35 (1000-3300 records each, under the race detector).
func TestQueueRunFillsRequests(t *testing.T) {
	c := newCluster(t)
	requests := countProduceRequests(c)
	// A long linger: requests leave on kicks (every send parked), never
	// because a timer ran out during a handover slowed by the race detector.
	p := newProducer(t, c, Config{ClientOpts: []kgo.Opt{kgo.ProducerLinger(200 * time.Millisecond)}})
	warmUp(t, p)
	before := requests.Load()

	q, err := vinequeue.New(vinequeue.Config[Record]{
		SizeOf:        RecordSize,
		Send:          p.SendRecords,
		BatchSize:     500,
		Workers:       8,
		FlushInterval: 10 * time.Millisecond,
		OnDrop:        func(batch []Record, reason error) { t.Errorf("dropped %d records: %v", len(batch), reason) },
	})
	if err != nil {
		t.Fatal(err)
	}
	const keys, perKey = 2000, 20
	value := make([]byte, 200)
	for seq := range perKey {
		for k := range keys {
			key := fmt.Appendf(nil, "user-%05d", k)
			if err := q.EnqueueKey(QueueKey(key), Record{Key: key, Value: value}); err != nil {
				t.Fatalf("EnqueueKey (seq %d): %v", seq, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := q.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st := q.Stats()
	if st.Delivered != keys*perKey {
		t.Fatalf("stats %+v: want %d delivered", st, keys*perKey)
	}
	n := requests.Load() - before
	t.Logf("%d records in %d batches and %d produce requests: %.0f records per request", st.Delivered, st.Batches, n, float64(st.Delivered)/float64(n))
	if 5*n > 2*int64(st.Batches) {
		t.Errorf("%d produce requests for %d batches, want at most two for every five batches", n, st.Batches)
	}
}

// TestSendGate walks the gate through the cases that decide a kick.
func TestSendGate(t *testing.T) {
	var g sendGate
	// One send alone: it is every send there has been, so it kicks.
	g.enter()
	kick, a := g.park()
	if !kick {
		t.Fatal("a lone send did not kick")
	}
	g.leave(a, true)

	// Four at once: the first to park waits for a second (half of the
	// peak), which kicks for both.
	for range 3 {
		g.enter()
	}
	g.enter()
	if kick, _ := g.park(); kick {
		t.Fatal("kicked with one send of four parked")
	}
	kick, b := g.park()
	if !kick {
		t.Fatal("the second of four sends to park did not kick")
	}
	// The other two hand over while the first group waits for its answer:
	// the second of them kicks too, so that the client sends their
	// records as soon as that answer comes, rather than at the end of the
	// linger.
	if kick, _ := g.park(); kick {
		t.Fatal("kicked with one send parked since the last kick")
	}
	kick, c := g.park()
	if !kick {
		t.Fatal("the second group did not kick while the first one's request was unanswered")
	}
	if c != b+1 {
		t.Fatalf("second group's cover %d, want %d", c, b+1)
	}
	// The first group returns and comes back with new batches. Its first
	// send back parks while the other three wait for answers: every send
	// is parked, as many as ever, yet it waits, since those three will
	// come back; kicking for it alone would make a request of one send.
	g.leave(b, true)
	g.enter()
	if kick, _ := g.park(); kick {
		t.Fatal("kicked for one send while the others waited for their answers")
	}
	// The second one back completes the group and kicks.
	g.leave(b, true)
	g.enter()
	kick, d := g.park()
	if !kick {
		t.Fatal("the first group, back, did not kick")
	}
	for _, cover := range []uint64{c, c, d, d} {
		g.leave(cover, true)
	}
	if g.active != 0 || g.parked != 0 || g.waiting != 0 {
		t.Fatalf("gate not empty after every send left: %+v", &g)
	}

	// Fewer sends than the peak and fewer than half of it parked: no
	// kick, the linger decides.
	g.enter()
	kick, e := g.park()
	if kick {
		t.Fatal("kicked with one send parked of a peak of four")
	}
	// Its records left at the end of the linger, with no kick: it no
	// longer counts as waiting for one.
	g.leave(e, true)
	if g.waiting != 0 {
		t.Fatalf("%d sends waiting for a kick after the only one left", g.waiting)
	}
}
