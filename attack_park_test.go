package vinequeue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vineroute/vinequeue/wal"
)

// TestAttackParkOfflineRequeueBeforeLeftovers: key 1's only item so far is
// poison and is dead-lettered (key 1 parks, nothing parked behind it yet);
// key 1's items 1..4 are accepted and then left in the main log by a Stop
// out of time (the one sender hangs on another key). `vinewal dlq requeue`
// (wal.RequeueDeadLetters) on the stopped directory releases the key. The
// next New must deliver key 1's items in order, 0 first: the requeued dead
// letter's items before the items parked behind it. An offline tool cannot
// place the letter's items before the key's items already in the main log,
// so it must refuse (ErrKeyedDeadLetter, nothing moved); the queue's own
// RequeueDeadLetters after the next New then delivers 0..4 in order.
//
// On main it delivers 1 2 3 4 0: the offline requeue appends the dead
// letter's items to the main log as new unkeyed records, after the key's
// leftovers; with no dead letter left the key is not parked at New, so the
// replay hands out the leftovers (older ids) first.
func TestAttackParkOfflineRequeueBeforeLeftovers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range []WALMode{Sync, Periodic} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			s := newParkSink()
			inSend := make(chan struct{}, 1)
			cfg := parkConfig(dir, mode, s)
			cfg.Workers = 1
			cfg.Send = hangingSend(s, inSend, holds(parkItem(stuckKey, 0)))
			q, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			s.poisoned.Store("1/0", true)
			enqueueKeys(t, q, []uint64{1}, 0, 1)
			flushT(t, q)
			d, parked := failedLetter(t, q)
			if parked != 0 {
				t.Fatalf("%d items parked; want none yet", parked)
			}
			if err := q.EnqueueKey(stuckKey, parkItem(stuckKey, 0)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-inSend:
			case <-time.After(30 * time.Second):
				t.Fatal("the stuck item never reached Send")
			}
			enqueueKeys(t, q, []uint64{1}, 1, 5)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stop = %v; want its deadline", err)
			}
			// The operator fixes the sink and requeues offline. An offline
			// tool cannot put the letter's items before the key's later
			// items already in the main log (they replay first, by id), so
			// it must refuse and move nothing; the queue's own requeue keeps
			// the order.
			s.poisoned.Delete("1/0")
			if n, err := wal.RequeueDeadLetters(dir, wal.Options{}, d.ID); n != 0 || !errors.Is(err, wal.ErrKeyedDeadLetter) {
				t.Fatalf("offline requeue: %d, %v; want it refused with ErrKeyedDeadLetter", n, err)
			}
			s2 := newParkSink()
			q, err = New(parkConfig(dir, mode, s2))
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			waitFor(t, "the replay", func() bool { st := q.Stats(); return !st.Backlog.Replaying && st.Buffered == 0 })
			flushT(t, q)
			if got := s2.delivered(1); len(got) != 0 {
				t.Fatalf("key 1 delivered %v while its item 0 is still dead-lettered", got)
			}
			if n, err := q.RequeueDeadLetters(d.ID); n != 1 || err != nil {
				t.Fatalf("online requeue: %d, %v", n, err)
			}
			flushT(t, q)
			if got := s2.delivered(1); !slices.Equal(got, seqs(0, 5)) {
				t.Fatalf("key 1 after an offline requeue: %v; want 0..4 in order", got)
			}
		})
	}
}

// TestAttackParkOfflineRequeueOfAParkedLetter: key 1 is parked behind its
// failed dead letter (item 0) with items 1..9 parked behind it. The
// operator requeues offline only the parked letter(s), not the failed one
// (`vinewal dlq requeue DIR <parked id>`). Online, the releaser would not
// pass the failed letter; offline, the next New must not deliver key 1's
// items 1..9 while item 0 is still dead-lettered.
//
// On main key 1 gets 1..9 at once: the parked letter's items go to the
// main log as unkeyed records, and the replay delivers them.
func TestAttackParkOfflineRequeueOfAParkedLetter(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	s := newParkSink()
	d, parkedIDs := parkedAndStopped(t, dir, s)
	// Moved offline, the parked items would be delivered ahead of item 0:
	// the tool must refuse and move nothing.
	if n, err := wal.RequeueDeadLetters(dir, wal.Options{}, parkedIDs...); !errors.Is(err, wal.ErrKeyedDeadLetter) || n != 0 {
		t.Fatalf("offline requeue of the parked letters: %d, %v; want it refused with ErrKeyedDeadLetter", n, err)
	}
	s2 := newParkSink()
	q, err := New(parkConfig(dir, Sync, s2))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	waitFor(t, "the replay", func() bool { st := q.Stats(); return !st.Backlog.Replaying && st.Buffered == 0 })
	flushT(t, q)
	if got := s2.delivered(1); len(got) != 0 {
		t.Fatalf("key 1 delivered %v while its item 0 is still dead-lettered (letter %d)", got, d.ID)
	}
}

// TestAttackParkDamagedFailedLetter: key 1 is parked behind its failed
// dead letter (item 0), items 1..9 parked behind it. While the queue is
// stopped the failed letter's file is damaged (a flipped byte near its
// end). The letter still exists (DeadLetters lists it, Damaged) and nobody
// requeued or purged it, so key 1 must stay parked at the next New: its
// later items must not be released as if the operator had released it.
//
// On main the next New's recovery moves the damaged letter aside
// (dlq/<id>.wal.corrupt, Stats.Corrupt 0, DeadLetters empty), and key 1's
// parked letters, now its oldest, read as released by an operator: items
// 1..9 are delivered, and item 0 is gone.
func TestAttackParkDamagedFailedLetter(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	s := newParkSink()
	d, _ := parkedAndStopped(t, dir, s)
	damageDeadLetter(t, dir, d.ID)
	s.poisoned.Delete("1/0")
	s2 := newParkSink()
	q, err := New(parkConfig(dir, Sync, s2))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	waitFor(t, "the replay", func() bool { st := q.Stats(); return !st.Backlog.Replaying })
	flushT(t, q)
	ds, err := q.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	damaged := false
	for _, x := range ds {
		if x.ID == d.ID && x.Damaged {
			damaged = true
		}
	}
	if !damaged {
		st := q.Stats()
		ents, _ := os.ReadDir(filepath.Join(dir, "dlq"))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		all, _ := os.ReadDir(dir)
		for _, e := range all {
			names = append(names, "/"+e.Name())
		}
		t.Logf("key 1 delivered %v; Stats %+v; files %v", s2.delivered(1), st, names)
		t.Fatalf("the failed letter %d is not listed damaged: %+v", d.ID, ds)
	}
	if got := s2.delivered(1); len(got) != 0 {
		t.Fatalf("key 1 released (%v) while its failed letter %d still exists, damaged, neither requeued nor purged", got, d.ID)
	}
}
