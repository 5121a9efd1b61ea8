package vinequeue

import (
	"bytes"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/vineroute/vinequeue/wal"
)

// TestAttackKeyRotationWithParkedKeys: key 1 parks (its dead letters and
// the main log sealed under k1); the queue restarts with k2 as
// EncryptionKey and k1 only to decrypt; key 1's next items park under k2;
// the online requeue delivers key 1's items in order across the two keys'
// files. Once everything is delivered, the directory no longer needs k1
// (wal.Inspect lists no file under it, as the README's rotation advice
// expects), and a queue with k2 alone opens it.
func TestAttackKeyRotationWithParkedKeys(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	dir := t.TempDir()
	s := newParkSink()
	cfg := parkConfig(dir, Sync, s)
	cfg.WAL.EncryptionKey = k1
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := parkPoisoned(t, q, s) // key 1: 0 failed, 1..9 parked
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.WAL.EncryptionKey, cfg.WAL.DecryptionKeys = k2, [][]byte{k1}
	q, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	enqueueKeys(t, q, []uint64{1}, 10, 20) // parked under k2
	flushT(t, q)
	if got := s.delivered(1); len(got) != 0 {
		t.Fatalf("key 1 delivered %v while parked", got)
	}
	s.poisoned.Delete("1/0")
	if _, err := q.RequeueDeadLetters(d.ID); err != nil {
		t.Fatal(err)
	}
	flushT(t, q)
	if got := s.delivered(1); !slices.Equal(got, seqs(0, 20)) {
		t.Fatalf("key 1 after requeue across a key rotation: %v; want 0..19", got)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := wal.Inspect(dir, k2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after delivery: key ids %v, missing with k2 alone %v, pending %d", r.KeyIDs, r.MissingKeys, r.Pending)
	if len(r.MissingKeys) > 0 {
		t.Errorf("everything delivered, yet the directory still needs k1 (%v): the rotation cannot finish without a drain", r.MissingKeys)
	}
	cfg.WAL.DecryptionKeys = nil
	q, err = New(cfg)
	if err != nil {
		t.Fatalf("New with k2 alone after everything was delivered: %v", err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}
