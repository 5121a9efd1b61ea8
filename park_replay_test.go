package vinequeue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vineroute/vinequeue/internal/crashtest"
	"github.com/vineroute/vinequeue/wal"
)

// Keyed items of a parked key that a crash or a Stop out of time leaves in
// the main log (no sender moved them to the dead-letter log yet) replay
// with their key, so the next New parks them behind their key's dead
// letter instead of delivering them ahead of it.

// keyedStuckEnv names the child run of TestParkKeysKeyedReplaySIGKILL: its
// value is the WAL directory.
const keyedStuckEnv = "VINEQUEUE_PARK_KEYED_CHILD"

// keyedStuckEncEnv, set, has that child encrypt its WAL.
const keyedStuckEncEnv = "VINEQUEUE_PARK_KEYED_CHILD_ENCRYPTED"

// parkReadyMsg is the line that child prints once its queue has parked key
// 1 and written key 1's later items.
const parkReadyMsg = "PARK-CHILD-READY"

// stuckKey's first item hangs the only sender until its ctx ends, so
// that the items enqueued after it stay in the main log.
const stuckKey = 9

// parkStuck runs parkPoisoned on a one-sender queue (key 1 parked behind
// its dead letter, items 1..9 parked), then hangs the sender on stuckKey's
// item and enqueues key 1's items 10..14: they are accepted (on disk once
// the tier writes them) and wait, in the main log, behind the hung sender.
// release ends the hang.
func parkStuck(t *testing.T, dir string, mode WALMode, encKey []byte) (q *Queue[[]byte], s *parkSink, d DeadLetter) {
	t.Helper()
	s = newParkSink()
	inSend := make(chan struct{}, 1)
	cfg := parkConfig(dir, mode, s)
	cfg.WAL.EncryptionKey = encKey
	cfg.Workers = 1
	cfg.Send = hangingSend(s, inSend, holds(parkItem(stuckKey, 0)))
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d = parkPoisoned(t, q, s)
	if err := q.EnqueueKey(stuckKey, parkItem(stuckKey, 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inSend:
	case <-time.After(30 * time.Second):
		t.Fatal("the stuck item never reached Send")
	}
	enqueueKeys(t, q, []uint64{1}, 10, 15)
	return q, s, d
}

// mainLogKeyed returns the items the main log of dir holds unacknowledged
// for key, from keyed records, in order; it fails the test on one of them
// replayed without its key.
func mainLogKeyed(t *testing.T, dir string, encKey []byte, key uint64) []string {
	t.Helper()
	l, err := wal.Open(dir, wal.Options{EncryptionKey: encKey})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var got []string
	err = l.ReplayRecords(func(r *wal.ReplayedRecord) error {
		i := 0
		return wal.ForEachItem(r.Payload, func(item []byte) error {
			defer func() { i++ }()
			if r.Keys == nil {
				if bytes.HasPrefix(item, []byte("1/")) {
					t.Errorf("item %s of key 1 is in the main log without its key", item)
				}
				return nil
			}
			if r.Keys[i] == key {
				got = append(got, string(item))
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// checkParkedAfterRestart opens dir again with a sink that accepts
// everything: key 1's items 10..14, replayed from the main log, are parked
// (not delivered), and released in order after key 1's dead letter when
// it is requeued.
func checkParkedAfterRestart(t *testing.T, dir string, mode WALMode, encKey []byte, d DeadLetter) {
	t.Helper()
	if got, want := mainLogKeyed(t, dir, encKey, 1), []string{"1/10", "1/11", "1/12", "1/13", "1/14"}; !slices.Equal(got, want) {
		t.Fatalf("main log holds %v of key 1 with their key; want %v", got, want)
	}
	s := newParkSink()
	cfg := parkConfig(dir, mode, s)
	cfg.WAL.EncryptionKey = encKey
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	flushT(t, q)
	if got := s.delivered(1); len(got) != 0 {
		t.Fatalf("key 1 (parked) delivered after restart: %v", got)
	}
	if got := s.delivered(stuckKey); !slices.Equal(got, []int{0}) {
		t.Fatalf("key %d after restart: %v; want its item replayed", stuckKey, got)
	}
	st := q.Stats()
	if st.ParkedKeys != 1 || st.ParkedItems != 14 || st.Parked != 5 {
		t.Fatalf("after restart: ParkedKeys %d, ParkedItems %d, Parked %d; want 1, 14, 5", st.ParkedKeys, st.ParkedItems, st.Parked)
	}
	checkIdentity(t, st)
	if _, err := q.RequeueDeadLetters(d.ID); err != nil {
		t.Fatal(err)
	}
	flushT(t, q)
	if got := s.delivered(1); !slices.Equal(got, seqs(0, 15)) {
		t.Fatalf("key 1 after requeue: %v; want 0..14 in order", got)
	}
	if st := q.Stats(); st.ParkedKeys != 0 || st.ParkedItems != 0 {
		t.Fatalf("after requeue: ParkedKeys %d, ParkedItems %d", st.ParkedKeys, st.ParkedItems)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	checkIdentity(t, q.Stats())
}

// TestParkKeysKeyedReplayStopOutOfTime: Stop runs out of time while key
// 1's later items wait in the main log; the next New parks them. Also
// with an encrypted WAL: the keys are sealed with the items.
func TestParkKeysKeyedReplayStopOutOfTime(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	encKey := bytes.Repeat([]byte{0x42}, 32)
	for _, c := range []struct {
		name   string
		mode   WALMode
		encKey []byte
	}{{"sync", Sync, nil}, {"periodic", Periodic, nil}, {"sync-encrypted", Sync, encKey}, {"periodic-encrypted", Periodic, encKey}} {
		mode := c.mode
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			q, _, d := parkStuck(t, dir, mode, c.encKey)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Stop = %v; want its deadline", err)
			}
			checkParkedAfterRestart(t, dir, mode, c.encKey, d)
			if c.encKey != nil {
				noPlaintextKeyed(t, dir)
			}
		})
	}
}

// TestParkKeysKeyedReplaySIGKILL: a child process parks key 1, leaves key
// 1's later items in the main log (Sync: durable when EnqueueKey returned)
// and is SIGKILLed; the next New parks them.
func TestParkKeysKeyedReplaySIGKILL(t *testing.T) {
	var encKey []byte
	if os.Getenv(keyedStuckEncEnv) != "" {
		encKey = bytes.Repeat([]byte{0x42}, 32)
	}
	if dir := os.Getenv(keyedStuckEnv); dir != "" {
		parkStuck(t, dir, Sync, encKey)
		fmt.Println(parkReadyMsg)
		select {} // until SIGKILL
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	t.Run("clear", func(t *testing.T) { parkKeyedSIGKILL(t, nil) })
	t.Run("encrypted", func(t *testing.T) { parkKeyedSIGKILL(t, bytes.Repeat([]byte{0x42}, 32)) })
}

// parkKeyedSIGKILL runs TestParkKeysKeyedReplaySIGKILL's child (with
// encKey when not nil), kills it and checks the restart.
func parkKeyedSIGKILL(t *testing.T, encKey []byte) {
	dir := t.TempDir()
	env := []string{keyedStuckEnv + "=" + dir}
	if encKey != nil {
		env = append(env, keyedStuckEncEnv+"=1")
	}
	crashtest.KillWhenReady(t, "TestParkKeysKeyedReplaySIGKILL", parkReadyMsg, env...)
	// The child's dead letter: the failed one of key 1.
	var keys [][]byte
	if encKey != nil {
		keys = append(keys, encKey)
	}
	ds, err := wal.ListDeadLetters(dir, keys...)
	if err != nil {
		t.Fatal(err)
	}
	var d DeadLetter
	for _, x := range ds {
		if !x.Parked {
			d = DeadLetter{ID: x.ID, Items: x.Items}
		}
	}
	if d.ID == 0 || d.Items != 1 {
		t.Fatalf("dead letters after the kill: %+v; want key 1's failed one", ds)
	}
	checkParkedAfterRestart(t, dir, Sync, encKey, d)
	if encKey != nil {
		noPlaintextKeyed(t, dir)
	}
}

// noPlaintextKeyed: no file under dir holds a keyed item in the clear.
func noPlaintextKeyed(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i := 10; i < 15; i++ {
			if bytes.Contains(b, parkItem(1, i)) {
				t.Errorf("%s holds %s in the clear", path, parkItem(1, i))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
