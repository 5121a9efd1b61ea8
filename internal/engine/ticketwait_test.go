package engine

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/governor"
)

// TestTicketWaitSleeps: a sender whose batch a checkpoint is writing waits
// for that write to be over; it sleeps until the writer signals rather
// than looking again and again (the Gosched loop it replaced looked some
// 5,000 times a millisecond, a core kept busy for as long as the write
// took). Its look is counted: a spin, then one look per signal.
func TestTicketWaitSleeps(t *testing.T) {
	q, _, _ := periodicBare(t)
	b := &pending[int]{items: []int{1, 2}, seq: 3}
	q.registerUnwritten(b, 1)
	tk := b.ticket
	if !b.claimToWrite(tk, &q.durable.waits) { // the checkpoint's
		t.Fatal("could not claim")
	}
	var looks atomic.Int64
	done := make(chan struct{})
	go func() {
		q.durable.waits.wait(func() bool { looks.Add(1); return b.wrote.Load() == tk })
		close(done)
	}()
	// Asleep once counted so, the spin over.
	for limit := time.Now().Add(5 * time.Second); q.durable.waits.sleeping.Load() == 0; {
		if time.Now().After(limit) {
			t.Fatal("the waiter never went to sleep")
		}
		time.Sleep(time.Millisecond)
	}
	before := looks.Load()
	time.Sleep(20 * time.Millisecond) // a write that takes a while: a bounded look, not a wait for an event
	if n := looks.Load() - before; n != 0 {
		t.Fatalf("the waiter looked %d times while asleep; want 0", n)
	}
	select {
	case <-done:
		t.Fatal("the wait ended before the write was over")
	default:
	}
	q.writeClaimed(b, tk, &recordWriter{})
	<-done
	if !b.onDisk() {
		t.Fatal("the batch is not on disk once the wait is over")
	}
}

// TestTicketWaitMissesNoSignal: a waiter and a writer racing, round after
// round, the wait ends (a wake-up lost between the waiter's last look and
// its sleep would hang the round: one change, one signal a round) and only
// once its change is made.
func TestTicketWaitMissesNoSignal(t *testing.T) {
	var w ticketWaits
	for round := range 3000 {
		var changed atomic.Bool
		ended := make(chan bool, 1)
		go func() {
			w.wait(changed.Load)
			ended <- changed.Load()
		}()
		switch round % 3 {
		case 0: // asleep first
			for w.sleeping.Load() == 0 {
				runtime.Gosched()
			}
		case 1: // at once: racing its spin and its last look
		case 2:
			for range round % 23 {
				runtime.Gosched()
			}
		}
		changed.Store(true)
		w.signal()
		select {
		case ok := <-ended:
			if !ok {
				t.Fatalf("round %d: the wait ended before the change", round)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the wait never ended: a signal was lost", round)
		}
	}
}

// TestSettleFlightWakesWhenItsBatchIsFinished: settleFlight, waiting for
// another writer's write of its shard's batch in flight (the batch's
// sender, its Send failed for good), ends once that write is over or the
// batch is finished. A look that straddles the finish misses both: woken
// by the write's signal, it reads inflight (still set), is held up (the
// scheduler) while the sender finishes the batch (inflight cleared, the
// batch recycled: wrote reset), and then reads wrote (not the ticket). It
// sleeps again after the only signal the write made. Here the write's end
// is stored without its signal while the waiter sleeps, having seen
// neither: the state that look leaves. Finishing the batch must wake it.
func TestSettleFlightWakesWhenItsBatchIsFinished(t *testing.T) {
	q, c, _ := periodicBare(t)
	gov, err := governor.New(governor.Options{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer gov.Close()
	q.gov = gov
	s := &q.keyed.shards[0]
	b := cutUnwritten(c, s, 0, 1, 2)
	tk := b.ticket
	if !b.claimToWrite(tk, &q.durable.waits) { // its sender's
		t.Fatal("could not claim")
	}
	settled := make(chan struct{})
	go func() {
		c.settleFlight(s)
		close(settled)
	}()
	for limit := time.Now().Add(5 * time.Second); q.durable.waits.sleeping.Load() == 0; {
		if time.Now().After(limit) {
			t.Fatal("settleFlight never went to sleep")
		}
		time.Sleep(time.Millisecond)
	}
	b.wrote.Store(tk)      // the write is over; its signal went to the look above
	q.finish(b, true, nil) // the sender finishes (and recycles) the batch
	select {
	case <-settled:
	case <-time.After(5 * time.Second):
		q.durable.waits.signal() // let the goroutine end
		<-settled
		t.Fatal("settleFlight still asleep after its shard's batch was finished: a lost wake-up")
	}
}
