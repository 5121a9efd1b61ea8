package vinequeue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/vineroute/vinequeue/wal"
)

// TestParkDamagedLetterHoldsUntilPurged: a parked key's failed dead letter
// is damaged while the queue is stopped. The next New counts it
// (Stats.Corrupt), keeps key 1 parked, refuses to requeue it (it does not
// read), and an offline requeue of the parked letters behind it is refused;
// purging it is the operator's act that releases key 1: its parked items
// 1..9 are then delivered, in order.
func TestParkDamagedLetterHoldsUntilPurged(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	s := newParkSink()
	d, parkedIDs := parkedAndStopped(t, dir, s)
	damageDeadLetter(t, dir, d.ID)
	if n, err := wal.RequeueDeadLetters(dir, wal.Options{}, parkedIDs...); n != 0 || !errors.Is(err, wal.ErrKeyedDeadLetter) {
		t.Fatalf("offline requeue of the letters behind a damaged one: %d, %v; want ErrKeyedDeadLetter", n, err)
	}
	s.poisoned.Delete("1/0")
	s2 := newParkSink()
	q, err := New(parkConfig(dir, Sync, s2))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	flushT(t, q)
	if st := q.Stats(); st.Corrupt != 1 || st.ParkedKeys != 1 || st.ParkedItems != 9 {
		t.Fatalf("Stats: Corrupt %d, ParkedKeys %d, ParkedItems %d; want 1, 1, 9", st.Corrupt, st.ParkedKeys, st.ParkedItems)
	}
	if _, err := q.RequeueDeadLetters(d.ID); err == nil {
		t.Fatal("requeue of a damaged dead letter succeeded")
	}
	flushT(t, q)
	if got := s2.delivered(1); len(got) != 0 {
		t.Fatalf("key 1 delivered %v before its damaged letter was purged", got)
	}
	if n, err := q.PurgeDeadLetters(d.ID); n != 1 || err != nil {
		t.Fatalf("purge: %d, %v", n, err)
	}
	flushT(t, q)
	if got := s2.delivered(1); !slices.Equal(got, seqs(1, 10)) {
		t.Fatalf("key 1 after the purge: %v; want 1..9 in order", got)
	}
	if st := q.Stats(); st.ParkedKeys != 0 || st.ParkedItems != 0 {
		t.Fatalf("ParkedKeys %d, ParkedItems %d after the purge", st.ParkedKeys, st.ParkedItems)
	}
}

// parkedAndStopped leaves dir stopped with key 1 parked (parkPoisoned, Sync
// mode): its failed dead letter, and the ids of the letters parked behind
// it.
func parkedAndStopped(t *testing.T, dir string, s *parkSink) (failed DeadLetter, parkedIDs []uint64) {
	t.Helper()
	q, err := New(parkConfig(dir, Sync, s))
	if err != nil {
		t.Fatal(err)
	}
	failed = parkPoisoned(t, q, s)
	ds, err := q.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	for _, x := range ds {
		if x.Parked {
			parkedIDs = append(parkedIDs, x.ID)
		}
	}
	return failed, parkedIDs
}

// damageDeadLetter flips a byte near the end of dead letter id's file, as
// a bad sector would, while the queue is stopped.
func damageDeadLetter(t *testing.T, dir string, id uint64) {
	t.Helper()
	path := filepath.Join(dir, "dlq", fmt.Sprintf("%020d.wal", id))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-9] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
