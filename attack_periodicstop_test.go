package vinequeue_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	vq "github.com/vineroute/vinequeue"
)

// periodic attacks on the lazy write: a batch is written only if a
// checkpoint (or Stop out of time) finds it undelivered, by whoever claims
// its write ticket first. These tests look for a batch written twice (a
// checkpoint and Stop, or a checkpoint and its failing sender), for one
// written by nobody, and for a key's order broken across the restart.

// sendKind sorts a batch by its first item: held in Send until ctx ends,
// failing every attempt, delivered after a few checkpoints (written while
// in Send, then acknowledged), or delivered at once.
func sendKind(first []byte) int {
	h := fnv.New32a()
	h.Write(first)
	switch h.Sum32() % 10 {
	case 0:
		return kindHold
	case 1:
		return kindFail
	case 2, 3:
		return kindSlow
	}
	return kindOK
}

const (
	kindHold = iota
	kindFail
	kindSlow
	kindOK
)

// keyedSeq parses k/<key>/<seq>; ok false for an unkeyed item.
func keyedSeq(it string) (key, seq int, ok bool) {
	rest, ok := strings.CutPrefix(it, "k/")
	if !ok {
		return 0, 0, false
	}
	ks, ss, _ := strings.Cut(rest, "/")
	key, _ = strconv.Atoi(ks)
	seq, _ = strconv.Atoi(ss)
	return key, seq, true
}

// TestAttackPeriodicStopOutOfTimeRacesCheckpoints: checkpoints every
// millisecond while batches sit in Send (held until ctx ends), retry for
// ever, or are delivered; keyed and unkeyed items mixed, Workers 4,
// Collectors 2. Stop runs out of time (at once, or once DurableThrough has
// passed the last call: every batch then written by a checkpoint, so Stop
// must not write it again). The next New replays every item not delivered
// exactly once, as many as the first queue said it left on disk, and each
// key's items are first delivered in their order across the restart.
func TestAttackPeriodicStopOutOfTimeRacesCheckpoints(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rounds := 6
	if testing.Short() {
		rounds = 2
	}
	for round := range rounds {
		waitDurable := round%2 == 1
		park := round%3 == 2 // and a poisoned item: a dead letter, its key parked
		t.Run(fmt.Sprintf("round%d/waitDurable=%v/ParkKeys=%v", round, waitDurable, park), func(t *testing.T) {
			dir := t.TempDir()
			cfg := func(send vq.SendFunc[[]byte], onDrop func([][]byte, error)) vq.Config[[]byte] {
				return vq.Config[[]byte]{
					Send:          send,
					BatchSize:     8,
					FlushInterval: 2 * time.Millisecond,
					Workers:       4,
					Collectors:    2,
					Retry:         vq.RetryPolicy{MaxAttempts: vq.RetryForever, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond},
					OnDrop:        onDrop,
					ParkKeys:      park,
					WAL:           vq.WALConfig{Dir: dir, Mode: vq.Periodic, SyncInterval: time.Millisecond},
				}
			}
			var mu sync.Mutex
			var order []string // first deliveries, in order, both queues
			seen := map[string]int{}
			var dropped []string
			record := func(b [][]byte) {
				mu.Lock()
				defer mu.Unlock()
				for _, it := range b {
					if seen[string(it)]++; seen[string(it)] == 1 {
						order = append(order, string(it))
					}
				}
			}
			onDrop := func(b [][]byte, _ error) {
				mu.Lock()
				defer mu.Unlock()
				for _, it := range b {
					dropped = append(dropped, string(it))
				}
			}
			q, err := vq.New(cfg(func(ctx context.Context, b [][]byte) error {
				for _, it := range b {
					if park && string(it) == "k/2/1" {
						return vq.Permanent(errors.New("poison"))
					}
				}
				switch sendKind(b[0]) {
				case kindHold:
					<-ctx.Done()
					return ctx.Err()
				case kindFail:
					return errors.New("down")
				case kindSlow:
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(5 * time.Millisecond): // a slow sink, not a wait for an event
					}
				}
				record(b)
				return nil
			}, onDrop))
			if err != nil {
				t.Fatal(err)
			}
			const keys, perKey, unkeyed = 8, 60, 400
			var all []string
			u := 0
			for s := range perKey {
				for k := range keys {
					it := fmt.Sprintf("k/%d/%d", k, s)
					if err := q.EnqueueKey(uint64(k), []byte(it)); err != nil {
						t.Fatal(err)
					}
					all = append(all, it)
				}
				for range unkeyed / perKey {
					it := fmt.Sprintf("u/%d", u)
					u++
					if err := q.Enqueue([]byte(it)); err != nil {
						t.Fatal(err)
					}
					all = append(all, it)
				}
			}
			last := time.Now()
			if waitDurable {
				deadline := time.Now().Add(20 * time.Second)
				for !q.Stats().DurableThrough.After(last) {
					if time.Now().After(deadline) {
						t.Fatalf("DurableThrough never passed the last call: %+v", q.Stats())
					}
					time.Sleep(time.Millisecond) // polling the mark
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			err = q.Stop(ctx)
			cancel()
			if err == nil {
				t.Fatal("Stop returned nil with batches held in Send for ever")
			}
			st1 := q.Stats()
			mu.Lock()
			delivered1 := len(seen)
			if uint64(len(dropped)) != st1.DeadLettered {
				t.Errorf("Periodic Stop out of time handed %d items to OnDrop, %d of them dead-lettered; the rest should stay in the WAL", len(dropped), st1.DeadLettered)
			}
			mu.Unlock()

			var replayed []string
			q2, err := vq.New(cfg(func(_ context.Context, b [][]byte) error {
				mu.Lock()
				for _, it := range b {
					replayed = append(replayed, string(it))
				}
				mu.Unlock()
				record(b)
				return nil
			}, onDrop))
			if err != nil {
				t.Fatal(err)
			}
			fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer fcancel()
			if err := q2.Flush(fctx); err != nil {
				t.Fatal(err)
			}
			if park {
				if _, err := q2.RequeueDeadLetters(); err != nil {
					t.Fatal(err)
				}
				if err := q2.Flush(fctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := q2.Close(); err != nil {
				t.Fatal(err)
			}
			st2 := q2.Stats()
			mu.Lock()
			defer mu.Unlock()
			t.Logf("first queue: delivered %d, left on disk %d, dead-lettered %d, parked %d; second: replayed %d, parked %d", st1.Delivered, st1.LeftOnDisk, st1.DeadLettered, st1.Parked, st2.Replayed, st2.Parked)
			twice := 0
			for _, it := range all {
				switch n := seen[it]; {
				case n == 0:
					t.Errorf("item %s accepted and never delivered, neither before Stop nor replayed", it)
				case n > 1:
					if twice < 5 {
						t.Errorf("item %s delivered %d times", it, n)
					}
					twice++
				}
			}
			if twice > 0 {
				t.Errorf("%d items delivered more than once (first queue delivered %d distinct, %d replayed)", twice, delivered1, len(replayed))
			}
			if st2.Replayed != st1.LeftOnDisk {
				t.Errorf("the second queue replayed %d items; the first said it left %d on disk", st2.Replayed, st1.LeftOnDisk)
			}
			// The second queue's Send sees what it replayed (what parked on
			// the way comes out at the requeue), the dead letters and what
			// the first queue parked behind them.
			if uint64(len(replayed)) != st2.Replayed+st1.DeadLettered+st1.Parked {
				t.Errorf("Send saw %d items; Stats.Replayed %d, and %d were dead-lettered, %d parked", len(replayed), st2.Replayed, st1.DeadLettered, st1.Parked)
			}
			lastSeq := map[int]int{}
			for _, it := range order {
				if k, s, ok := keyedSeq(it); ok {
					if l, ok := lastSeq[k]; ok && s < l {
						t.Errorf("key %d: seq %d first delivered after seq %d", k, s, l)
					}
					lastSeq[k] = s
				}
			}
		})
	}
}

// TestAttackPeriodicDeadAfterCheckpoint: a keyed batch and an AckDelivered
// item sit in Send until a checkpoint has written them (DurableThrough
// passes their calls), then Send fails for good. Their sender must
// dead-letter what the checkpoint wrote (not write it again) and
// acknowledge it in the main log: the next New replays nothing, the dead
// letters hold each failed item once, and requeuing them delivers each
// once. With ParkKeys the key's later items park behind the dead letter
// and come out after it, in the key's order.
func TestAttackPeriodicDeadAfterCheckpoint(t *testing.T) {
	for _, park := range []bool{false, true} {
		t.Run(fmt.Sprintf("ParkKeys=%v", park), func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			dir := t.TempDir()
			var mu sync.Mutex
			seen := map[string]int{}
			var order []string
			record := func(b [][]byte) {
				mu.Lock()
				defer mu.Unlock()
				for _, it := range b {
					if seen[string(it)]++; seen[string(it)] == 1 {
						order = append(order, string(it))
					}
				}
			}
			cfg := func(send vq.SendFunc[[]byte]) vq.Config[[]byte] {
				return vq.Config[[]byte]{
					Send:          send,
					BatchSize:     4,
					FlushInterval: 2 * time.Millisecond,
					Workers:       3,
					Retry:         vq.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond},
					ParkKeys:      park,
					WAL:           vq.WALConfig{Dir: dir, Mode: vq.Periodic, SyncInterval: 5 * time.Millisecond},
				}
			}
			poison := func(it []byte) bool {
				if string(it) == "u/poison" {
					return true
				}
				k, s, ok := keyedSeq(string(it))
				return ok && k == 1 && s < 4
			}
			entered := make(chan struct{}, 16)
			release := make(chan struct{})
			q, err := vq.New(cfg(func(_ context.Context, b [][]byte) error {
				for _, it := range b {
					if poison(it) {
						entered <- struct{}{}
						<-release
						return vq.Permanent(errors.New("poison"))
					}
				}
				record(b)
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			for s := range 4 {
				if err := q.EnqueueKey(1, fmt.Appendf(nil, "k/1/%d", s)); err != nil {
					t.Fatal(err)
				}
			}
			ackErr := make(chan error, 1)
			go func() { ackErr <- q.EnqueueAck(context.Background(), []byte("u/poison"), vq.AckDelivered) }()
			for range 2 {
				select {
				case <-entered:
				case <-time.After(20 * time.Second):
					t.Fatal("the poisoned batches never reached Send")
				}
			}
			after := time.Now()
			deadline := time.Now().Add(20 * time.Second)
			for !q.Stats().DurableThrough.After(after) {
				if time.Now().After(deadline) {
					t.Fatalf("DurableThrough never passed the batches in Send: %+v", q.Stats())
				}
				time.Sleep(time.Millisecond) // polling the mark
			}
			for s := 4; s < 10; s++ {
				if err := q.EnqueueKey(1, fmt.Appendf(nil, "k/1/%d", s)); err != nil {
					t.Fatal(err)
				}
			}
			for s := range 10 {
				if err := q.EnqueueKey(2, fmt.Appendf(nil, "k/2/%d", s)); err != nil {
					t.Fatal(err)
				}
			}
			close(release)
			if err := <-ackErr; !errors.Is(err, vq.ErrDropped) {
				t.Errorf("EnqueueAck of a dead-lettered item: %v; want ErrDropped", err)
			}
			flushThenClose(t, q, 20*time.Second)
			st1 := q.Stats()
			if st1.DeadLettered != 5 {
				t.Errorf("DeadLettered %d; want 5 (4 keyed, 1 AckDelivered)", st1.DeadLettered)
			}
			if want := map[bool]uint64{false: 0, true: 6}[park]; st1.Parked != want {
				t.Errorf("Parked %d; want %d", st1.Parked, want)
			}

			q2, err := vq.New(cfg(func(_ context.Context, b [][]byte) error { record(b); return nil }))
			if err != nil {
				t.Fatal(err)
			}
			flushWithin(t, q2, 20*time.Second)
			if st := q2.Stats(); st.Replayed != 0 {
				t.Errorf("the next New replayed %d items from the main log; the failed batches were dead-lettered and acknowledged", st.Replayed)
			}
			dls, err := q2.DeadLetters()
			if err != nil {
				t.Fatal(err)
			}
			items := 0
			for _, d := range dls {
				items += d.Items
			}
			if want := map[bool]int{false: 5, true: 11}[park]; items != want {
				t.Errorf("dead letters hold %d items (%+v); want %d", items, dls, want)
			}
			if _, err := q2.RequeueDeadLetters(); err != nil {
				t.Fatal(err)
			}
			flushThenClose(t, q2, 20*time.Second)
			mu.Lock()
			defer mu.Unlock()
			for k := 1; k <= 2; k++ {
				for s := range 10 {
					if it := fmt.Sprintf("k/%d/%d", k, s); seen[it] != 1 {
						t.Errorf("item %s delivered %d times; want once", it, seen[it])
					}
				}
			}
			if seen["u/poison"] != 1 {
				t.Errorf("u/poison delivered %d times; want once", seen["u/poison"])
			}
			if park {
				last := -1
				for _, it := range order {
					if k, s, ok := keyedSeq(it); ok && k == 1 {
						if s < last {
							t.Errorf("key 1: seq %d first delivered after seq %d (order %v)", s, last, order)
						}
						last = s
					}
				}
			}
		})
	}
}

// TestAttackPeriodicCleanCloseLeavesNothing: a slow sink (most batches
// are written by a checkpoint while in Send, then acknowledged), retries,
// EnqueueKey, Enqueue and EnqueueAck at both levels, ParkKeys with a
// poisoned key, checkpoints every 2ms. After Close the WAL holds nothing
// to replay: the next New replays no item, and the only items left are
// the dead letters (the poisoned batches and what parked behind them).
// Every accepted item is delivered once or dead-lettered once.
func TestAttackPeriodicCleanCloseLeavesNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	var mu sync.Mutex
	seen := map[string]int{}
	var attempts sync.Map
	cfg := func(send vq.SendFunc[[]byte]) vq.Config[[]byte] {
		return vq.Config[[]byte]{
			Send:          send,
			BatchSize:     16,
			FlushInterval: 2 * time.Millisecond,
			Workers:       3,
			Collectors:    2,
			Retry:         vq.RetryPolicy{MaxAttempts: 4, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond},
			ParkKeys:      true,
			WAL:           vq.WALConfig{Dir: dir, Mode: vq.Periodic, SyncInterval: 2 * time.Millisecond},
		}
	}
	q, err := vq.New(cfg(func(ctx context.Context, b [][]byte) error {
		for _, it := range b {
			if string(it) == "k/3/50" {
				return vq.Permanent(errors.New("poison"))
			}
		}
		n, _ := attempts.LoadOrStore(string(b[0]), new(int))
		if c := n.(*int); *c < 1 && len(b[0])%3 == 0 {
			*c++ // first attempt of some batches fails: a retry
			return errors.New("flaky")
		}
		select { // a slow sink: checkpoints write what is in Send
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(3 * time.Millisecond):
		}
		mu.Lock()
		defer mu.Unlock()
		for _, it := range b {
			seen[string(it)]++
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	var wg sync.WaitGroup
	var allMu sync.Mutex
	add := func(it string) {
		allMu.Lock()
		all = append(all, it)
		allMu.Unlock()
	}
	for g := range 4 {
		wg.Go(func() {
			for i := range 150 {
				var it string
				var err error
				switch g {
				case 0, 1:
					for k := g * 4; k < g*4+4; k++ {
						it = fmt.Sprintf("k/%d/%d", k, i)
						if err = q.EnqueueKey(uint64(k), []byte(it)); err != nil {
							break
						}
						add(it)
					}
					it = ""
				case 2:
					it = fmt.Sprintf("u/%d", i)
					err = q.Enqueue([]byte(it))
				case 3:
					it = fmt.Sprintf("a/%d", i)
					level := vq.AckDurable
					if i%2 == 1 {
						level = vq.AckDelivered
					}
					err = q.EnqueueAck(context.Background(), []byte(it), level)
				}
				if err != nil {
					t.Errorf("intake: %v", err)
					return
				}
				if it != "" {
					add(it)
				}
			}
		})
	}
	wg.Wait()
	flushThenClose(t, q, 30*time.Second)
	st1 := q.Stats()
	q2, err := vq.New(cfg(func(_ context.Context, b [][]byte) error {
		mu.Lock()
		defer mu.Unlock()
		for _, it := range b {
			seen[string(it)]++
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	flushWithin(t, q2, 30*time.Second)
	if st := q2.Stats(); st.Replayed != 0 {
		t.Errorf("after a clean Close the next New replayed %d items (first queue: delivered %d, dead-lettered %d, parked %d)", st.Replayed, st1.Delivered, st1.DeadLettered, st1.Parked)
	}
	dls, err := q2.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	inDead := 0
	for _, d := range dls {
		inDead += d.Items
	}
	if want := int(st1.DeadLettered + st1.Parked); inDead != want {
		t.Errorf("dead letters hold %d items; the first queue dead-lettered %d and parked %d", inDead, st1.DeadLettered, st1.Parked)
	}
	if _, err := q2.RequeueDeadLetters(); err != nil {
		t.Fatal(err)
	}
	flushThenClose(t, q2, 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	bad := 0
	for _, it := range all {
		if seen[it] != 1 {
			if bad < 5 {
				t.Errorf("item %s delivered %d times over both queues; want once", it, seen[it])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d items not delivered exactly once", bad, len(all))
	}
	t.Logf("first queue: delivered %d, retries %d, dead-lettered %d, parked %d; dead letters %d items", st1.Delivered, st1.Retries, st1.DeadLettered, st1.Parked, inDead)
}
